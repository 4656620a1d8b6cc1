"""Time of one search step and its achieved GFLOP/s, beside a dense convolution's, on this machine.

    .venv/bin/python bench/search_step.py [--config configs/demo.yaml] [--steps 10] [--threads N]

FLOPs are counted as 2 per MAC from the analytic op table: the supernet's forward MACs on the
batch, times 3 for forward + backward, times 2 for a first-order step (architecture pass on the
val batch, weight pass on the train batch). The discriminator's share is left out, so the
GFLOP/s figure is for the generator supernet. Per-node vs per-edge mixing is compared by timing
one set of candidate ops and multiplying by how many sets each scheme runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from darts_sr.config import SearchConfig, load_config  # noqa: E402
from darts_sr.nets.networks import upsampler_macs  # noqa: E402
from darts_sr.search.generator_stage import GeneratorSearch  # noqa: E402
from darts_sr.training.runner import prepare_run_folder  # noqa: E402
from operations import OPS, build_op, conv_macs  # noqa: E402


def supernet_forward_macs(cfg: SearchConfig) -> int:
    s, p, b = cfg.supernet, cfg.data.patch_size, cfg.data.batch_size
    per_node = sum(OPS[o].macs(s.channels, p, p) for o in s.ops)
    fixed = conv_macs(3, s.channels, 3, p, p) + s.channels * p * p + upsampler_macs(s.channels, cfg.data.scale, p, p)
    return b * (s.nodes * per_node + fixed)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def dense_conv_gflops(channels: int, size: int, batch: int, kernel: int, repeats: int) -> float:
    conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
    x = torch.randn(batch, channels, size, size, requires_grad=True)

    def step():
        conv(x).sum().backward()

    seconds = timed(step, repeats)
    return 2 * 3 * conv_macs(channels, channels, kernel, size, size) * batch / seconds / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    # A huge epoch keeps epoch-end work (validation, figures, checkpoint) out of the timed steps.
    overrides = [
        "optim.warmup_epochs=0",
        "optim.steps_per_epoch=1000000",
        "run.log_every=1000000",
        "run.device=cpu",
        *args.set,
    ]
    cfg = load_config(SearchConfig, args.config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        search = GeneratorSearch(cfg, prepare_run_folder(Path(tmp) / "run", False, False))
        pixel_cfg = load_config(SearchConfig, args.config, [*overrides, "loss.adversarial=0"])
        pixel_only = GeneratorSearch(pixel_cfg, prepare_run_folder(Path(tmp) / "pixel", False, False))

        writer = SummaryWriter(str(Path(tmp) / "tb"))

        def one_step(s: GeneratorSearch):
            return lambda: s.one_step(writer)

        full = timed(one_step(search), args.steps)
        generator_only = timed(one_step(pixel_only), args.steps)

    flops = 2 * 3 * 2 * supernet_forward_macs(cfg)
    s, pch, b = cfg.supernet, cfg.data.patch_size, cfg.data.batch_size
    x = torch.randn(b, s.channels, pch, pch, requires_grad=True)
    ops = [build_op(o, s.channels) for o in s.ops]
    op_set = timed(lambda: sum(op(x) for op in ops).sum().backward(), args.steps)
    edges = s.nodes * (s.nodes + 1) // 2

    print(
        f"threads {args.threads}; config {args.config.name}; batch {b}, LR patch {pch}, "
        f"{s.nodes} nodes x {len(s.ops)} ops"
    )
    print(f"search step (first order, with discriminator):  {full * 1e3:8.1f} ms")
    print(
        f"search step (first order, generator loss only): {generator_only * 1e3:8.1f} ms, "
        f"{flops / generator_only / 1e9:6.2f} GFLOP/s ({flops / 1e9:.2f} GFLOP)"
    )
    dense_small = dense_conv_gflops(s.channels, pch, b, 3, args.steps)
    dense_large = dense_conv_gflops(64, 64, 8, 3, args.steps)
    print(f"dense 3x3 conv fwd+bwd, {s.channels} ch, {pch}x{pch}, batch {b}: {dense_small:6.2f} GFLOP/s")
    print(f"dense 3x3 conv fwd+bwd, 64 ch, 64x64, batch 8:   {dense_large:6.2f} GFLOP/s")
    print(
        f"one candidate-op set fwd+bwd: {op_set * 1e3:.1f} ms -> per-node mixing runs {s.nodes} sets "
        f"({s.nodes * op_set * 1e3:.0f} ms), per-edge {edges} sets ({edges * op_set * 1e3:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
