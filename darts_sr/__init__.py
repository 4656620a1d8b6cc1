"""darts_sr: differentiable architecture search for tiny perceptual super-resolution.

Image range rule for the whole package: image tensors are float in [0, 1], shaped (B, 3, H, W),
RGB. Networks that need another range (TPSR's 0-255 mean shift) convert once, inside the model.
Images on disk and in ``data`` are uint8 arrays (H, W, 3).
"""
