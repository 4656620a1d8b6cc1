"""Scoring generators: the metric table (Y-PSNR/SSIM on Y, LPIPS, NIQE), scoring over datasets and the
``Evaluator`` experiments use, tiled inference (``upscale``), ONNX export. Uses ``nets``; trains nothing."""
