"""Where the cost control alone lands the argmax network, penalty against dual ascent, in milliseconds.

    .venv/bin/python bench/cost_control.py [--table TABLE.json] [--steps 300] [--seeds 4]

A 10-node supernet over the default search space at 4 channels (a made-up table unless --table names one at 4
channels) is trained on the cost term alone, or on the cost term plus a competing "quality" pull toward big
(``+``) or small (``-``) ops, with the search's AdamW and cosine schedule; the table reports how far the argmax
network's ms land from the target (before the window rule), over targets (0.7, 1 and 1.4 times TPSR's shape at 4
channels) x seeds. ``penalty`` is cost.penalty's
log_ratio (weight 1, dead zone 1%), ``dual`` cost.control's multiplier at each dual_lr (dual_max 10). No timing:
the numbers are deterministic on CPU. The pull is a toy stand-in for the loss's architecture gradient, not a search.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darts_sr.evaluation.latency import LatencyTable, predict_ms  # noqa: E402
from darts_sr.losses import cost_penalty  # noqa: E402
from darts_sr.nets.genotype import TPSR, GeneratorGenotype  # noqa: E402
from darts_sr.search.cost import latency_cost  # noqa: E402
from darts_sr.search.supernet import GeneratorSupernet  # noqa: E402
from operations import GENERATOR_SEARCH_SPACE  # noqa: E402

OP_MS = {"conv_3x3": 1.3, "conv_5x5": 2.7, "conv_7x7": 4.6, "sep_3x3": 0.61, "sep_5x5": 0.83, "sep_7x7": 1.17}
OP_MS |= {"dil_3x3": 1.41, "skip": 0.02}
SIZE = (12, 16)


def made_up_table() -> LatencyTable:
    row = {"channels": 4, "lr_height": SIZE[0], "lr_width": SIZE[1]}
    prov = dict.fromkeys(["backend", "device", "torch_version", "cpu_model", "platform", "python_version", "date"], "-")
    prov |= {"threads": 1, "repeats": 1, "warmup": 0, "onnxruntime_version": None, "cpu_cores": 1, "gpu": None}
    prov |= {"load_before": [0, 0, 0], "load_after": [0, 0, 0]}
    data = {
        "kind": "latency_table",
        "format": 1,
        "scale": 4,
        "provenance": prov,
        "ops": [{"op": op, **row, "ms": ms} for op, ms in OP_MS.items()],
        "stem": [{**row, "ms": 0.9}],
        "upsampler": [{**row, "ms": 2.1}],
        "output": [{**row, "ms_by_outputs": [0.05, 0.09, 0.14]}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.json"
        path.write_text(json.dumps(data))
        return LatencyTable.load(path)


def land(table, size, control: str, dual_lr: float, target: float, seed: int, pull: float, steps: int) -> float:
    torch.manual_seed(seed)
    net = GeneratorSupernet(
        10, 4, 4, GENERATOR_SEARCH_SPACE, cost=latency_cost(table, GENERATOR_SEARCH_SPACE, 4, 4, 10, size)
    )
    optimizer = torch.optim.AdamW(net.arch_parameters(), lr=0.05, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-3)
    favoured = net.op_names.index("conv_7x7" if pull > 0 else "sep_3x3")
    lam = 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        ms = net.argmax_cost()
        loss = 1.0 - abs(pull) * net.op_probs()[:, favoured].mean()
        if control == "dual":
            log_ratio = (ms / target).log()
            term = loss.detach() * lam * log_ratio
            lam = min(max(lam + dual_lr * log_ratio.item(), -10.0), 10.0)
        else:
            term = cost_penalty(ms, target, "log_ratio", 1.0, loss=loss, dead_zone=0.01)[0]
        (loss + term).backward()
        optimizer.step()
        schedule.step()
    return net.derive_with_report(max_skip_nodes=2)[1]["argmax_cost"] / target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", help="a latency table at 4 channels (default: a made-up one)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    table = LatencyTable.load(args.table) if args.table else made_up_table()
    size = table.shape(4)[1:]
    tpsr = predict_ms(GeneratorGenotype(TPSR.nodes, TPSR.outputs, 4, 4), table, size)  # TPSR's shape at 4 channels
    targets = [0.7 * tpsr, tpsr, 1.4 * tpsr]
    print(f"targets {', '.join(f'{t:.2f}' for t in targets)} ms, {args.seeds} seeds, {args.steps} steps")
    print(f"{'control':<16}{'pull':>6}{'median |err|':>14}{'max |err|':>11}{'within 10%':>12}")
    for control, dual_lr in [("penalty", 0.0), ("dual", 0.5), ("dual", 2.0), ("dual", 10.0)]:
        for pull in (0.0, 0.5, -0.5):
            ratios = [
                land(table, size, control, dual_lr, t, s, pull, args.steps) for t in targets for s in range(args.seeds)
            ]
            errors = [abs(r - 1) for r in ratios]
            label = control if control == "penalty" else f"dual lr {dual_lr:g}"
            within = sum(e <= 0.1 for e in errors)
            print(
                f"{label:<16}{pull:>+6.1f}{statistics.median(errors):>14.3f}{max(errors):>11.3f}"
                f"{f'{within}/{len(errors)}':>12}"
            )
    print("(|err|: |argmax ms / target - 1| after the last step, before the window rule)")


if __name__ == "__main__":
    main()
