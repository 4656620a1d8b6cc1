"""Latency lookup tables: milliseconds per operation of the generator search space, measured on one deployment.

MACs are a poor proxy for latency: at the same MACs a separable op is memory-bound where a dense conv is
compute-bound, and ONNX Runtime and eager PyTorch rank ops differently (``bench/latency.py``). A search that is to
budget milliseconds needs what each of its choices costs *here*: on this CPU or GPU, with this backend and this
number of threads. A ``LatencyTable`` holds exactly that, with how it was measured:

- per op: ``(op, channels, lr_height, lr_width) -> ms``, the op alone, C -> C channels at the LR size, batch 1 (the
  only shape at which the supernet uses an op);
- the fixed parts of every ``Generator``: the stem (mean shift + 3x3 conv 3 -> C), the upsampler (its stages + the
  mean shift back), and the output (the sum of k output nodes + PReLU) for k = 1..N, extrapolated linearly beyond;
- provenance: backend (``eager`` or ``onnxruntime``), threads, device, library versions, CPU (and GPU) model, load
  average before and after, date, repeats and warm-up, and the noisiest part's spread;
- optionally a correction ``measured ~ a * predicted + b`` and the validation it came from (``validate``).

Each part is a tiny ``nn.Module`` timed in isolation: eagerly under ``torch.no_grad()`` in eval mode with
``torch.set_num_threads(threads)``, or exported to ONNX in memory (as ``darts_sr.evaluation.export`` exports a whole
``Generator``: TorchScript exporter, dynamic batch/height/width) and run by an ONNX Runtime CPU session with
``intra_op_num_threads = threads``. Every part is called ``warmup`` times, then ``repeats`` times, and the median
is kept; eager parts take turns within each round (load from other processes hits them alike), ORT sessions run one
after another (each owns a thread pool that spins after a run; see ``_time``). An identity op (``skip``) is 0 ms
under ONNX Runtime, not timed: a whole network's export has no node for it (``provenance.notes`` says so).

``predict_ms`` sums a genotype's parts. The sum ignores what a whole network does differently from its parts (one
call overhead per part instead of one per network, caches, fusions across parts), so ``validate`` times random
genotypes end to end (``measure_ms``) and reports how well the sum ranks them (Spearman) and how far off it is
(MAPE), before and after a fitted linear correction; the correction is used only when it helps out of sample.
Timings on a loaded machine mean little: ``provenance.load_before``/``load_after`` say what the machine was doing.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from darts_sr.config import ConfigError
from darts_sr.errors import UserError
from darts_sr.io import atomic_write_text
from darts_sr.nets.genotype import GeneratorGenotype, live_nodes
from darts_sr.nets.networks import REFERENCE_LR_SIZE, Generator, MeanShift, Upsampler
from operations import OPS, build_op

log = logging.getLogger(__name__)

BACKENDS = ("eager", "onnxruntime")
FORMAT = 1  # the JSON layout's version; from_dict refuses others

OpKey = tuple[str, int, int, int]  # (op, channels, lr_height, lr_width)
ShapeKey = tuple[int, int, int]  # (channels, lr_height, lr_width)


class LatencyTableError(UserError, ValueError):
    """A table that cannot be read, or lacks an entry a prediction needs; the message names the file or entry."""


# --- the table -----------------------------------------------------------------------------------------------------


@dataclass
class Provenance:
    """How and where a table was measured."""

    backend: str
    threads: int
    device: str
    repeats: int
    warmup: int
    torch_version: str
    onnxruntime_version: str | None
    cpu_model: str
    cpu_cores: int  # cores this process may run on (affinity)
    gpu: str | None
    platform: str
    python_version: str
    load_before: tuple[float, float, float]  # os.getloadavg(): 1, 5, 15 minutes
    load_after: tuple[float, float, float]
    date: str  # ISO 8601, UTC
    noisiest_part: str = ""
    noisiest_relative_iqr: float = 0.0  # interquartile range / median of the noisiest part
    notes: list[str] = field(default_factory=list)  # entries set rather than timed, and why
    omp_num_threads: str | None = None  # the environment's OMP_NUM_THREADS (None: unset, or a table made before)


@dataclass
class Correction:
    """``measured ~ a * predicted + b`` (least squares over validated genotypes); ``used``: predictions apply it."""

    a: float
    b: float
    used: bool

    def apply(self, ms: float) -> float:
        return self.a * ms + self.b


@dataclass
class LatencyTable:
    """Median milliseconds of every part of a ``Generator`` at x``scale`` on one deployment (see the module doc)."""

    scale: int
    provenance: Provenance
    ops: dict[OpKey, float] = field(default_factory=dict)
    stem: dict[ShapeKey, float] = field(default_factory=dict)  # mean shift in + 3x3 conv 3 -> C
    upsampler: dict[ShapeKey, float] = field(default_factory=dict)  # the upsampler's stages + mean shift out
    output: dict[ShapeKey, tuple[float, ...]] = field(default_factory=dict)  # [k-1]: sum of k outputs + PReLU
    correction: Correction | None = None
    validation: dict[str, Any] | None = None

    # lookups ---------------------------------------------------------------------------------------------------------

    def shapes(self) -> list[ShapeKey]:
        """The (channels, lr_height, lr_width) the table was measured at."""
        return sorted(self.stem)

    def shape(self, channels: int, lr_size: tuple[int, int] | None = None) -> ShapeKey:
        """``(channels, *lr_size)``; ``lr_size`` None means the table's only LR size at ``channels``."""
        if lr_size is None:
            sizes = sorted({(h, w) for c, h, w in self.stem if c == channels})
            if len(sizes) != 1:
                known = ", ".join(f"{c} ch {h}x{w}" for c, h, w in self.shapes())
                what = "no LR size" if not sizes else "several LR sizes; name one"
                raise LatencyTableError(f"latency table has {what} at {channels} channels (measured: {known})")
            lr_size = sizes[0]
        key = (channels, *lr_size)
        if key not in self.stem:
            known = ", ".join(f"{c} ch {h}x{w}" for c, h, w in self.shapes())
            raise LatencyTableError(
                f"latency table has no entries at {channels} channels, {lr_size[0]}x{lr_size[1]} (measured: {known})"
            )
        return key

    def op_ms(self, op: str, shape: ShapeKey) -> float:
        if op == "none":  # the supernet's zero op is never part of a derived network
            return 0.0
        try:
            return self.ops[(op, *shape)]
        except KeyError:
            known = sorted({o for o, *s in self.ops if tuple(s) == shape})
            raise LatencyTableError(
                f"latency table has no entry for op {op!r} at {shape[0]} channels, {shape[1]}x{shape[2]} "
                f"(measured there: {', '.join(known)})"
            ) from None

    def op_costs(self, channels: int, lr_size: tuple[int, int] | None = None) -> dict[str, float]:
        """``{op: ms}`` at one shape, ``none`` included at 0: what a supernet weights by its op probabilities."""
        shape = self.shape(channels, lr_size)
        costs = {op: ms for (op, *s), ms in self.ops.items() if tuple(s) == shape}
        return costs | {"none": 0.0}

    def output_ms(self, outputs: int, shape: ShapeKey) -> float:
        """The sum of ``outputs`` output nodes + PReLU: measured for 1..N, a least-squares line in k beyond."""
        measured = self.output[shape]
        if outputs <= len(measured):
            return measured[outputs - 1]
        if len(measured) == 1:
            return measured[0] * outputs
        slope, intercept = np.polyfit(np.arange(1, len(measured) + 1), np.asarray(measured), 1)
        return float(slope * outputs + intercept)

    # JSON ------------------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def rows(table: dict[ShapeKey, Any], name: str) -> list[dict[str, Any]]:
            return [{"channels": c, "lr_height": h, "lr_width": w, name: v} for (c, h, w), v in sorted(table.items())]

        return {
            "kind": "latency_table",
            "format": FORMAT,
            "scale": self.scale,
            "provenance": asdict(self.provenance),
            "ops": [
                {"op": op, "channels": c, "lr_height": h, "lr_width": w, "ms": ms}
                for (op, c, h, w), ms in sorted(self.ops.items())
            ],
            "stem": rows(self.stem, "ms"),
            "upsampler": rows(self.upsampler, "ms"),
            "output": rows({k: list(v) for k, v in self.output.items()}, "ms_by_outputs"),
            "correction": None if self.correction is None else asdict(self.correction),
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LatencyTable:
        if not isinstance(data, dict) or data.get("kind") != "latency_table":
            raise LatencyTableError('not a latency table (no "kind": "latency_table")')
        if data.get("format") != FORMAT:
            raise LatencyTableError(f"latency table format {data.get('format')!r}; this version reads {FORMAT}")
        try:
            prov = dict(data["provenance"])
            for key in ("load_before", "load_after"):
                prov[key] = tuple(prov[key])

            def shaped(rows: list[dict[str, Any]], name: str) -> dict[ShapeKey, Any]:
                return {(int(r["channels"]), int(r["lr_height"]), int(r["lr_width"])): r[name] for r in rows}

            table = cls(
                scale=int(data["scale"]),
                provenance=Provenance(**prov),
                ops={
                    (str(r["op"]), int(r["channels"]), int(r["lr_height"]), int(r["lr_width"])): float(r["ms"])
                    for r in data["ops"]
                },
                stem={k: float(v) for k, v in shaped(data["stem"], "ms").items()},
                upsampler={k: float(v) for k, v in shaped(data["upsampler"], "ms").items()},
                output={k: tuple(map(float, v)) for k, v in shaped(data["output"], "ms_by_outputs").items()},
                correction=None if data.get("correction") is None else Correction(**data["correction"]),
                validation=data.get("validation"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyTableError(f"malformed latency table ({type(e).__name__}: {e})") from None
        if set(table.stem) != set(table.upsampler) or set(table.stem) != set(table.output):
            raise LatencyTableError("malformed latency table: stem, upsampler and output cover different shapes")
        return table

    def save(self, path: str | os.PathLike) -> None:
        """Writes the table as JSON, atomically."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise LatencyTableError(f"{path}: cannot read ({e.strerror or e})") from None
        except json.JSONDecodeError as e:
            raise LatencyTableError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except LatencyTableError as e:
            raise LatencyTableError(f"{path}: {e}") from None


# --- predicting ----------------------------------------------------------------------------------------------------


def breakdown(genotype: GeneratorGenotype, table: LatencyTable, lr_size: tuple[int, int] | None = None) -> dict:
    """``{part: ms}`` for ``genotype``: stem, each live node's op, the output sum + PReLU, the upsampler."""
    if genotype.scale != table.scale:
        raise LatencyTableError(f"latency table is for x{table.scale}; the genotype is x{genotype.scale}")
    shape = table.shape(genotype.channels, lr_size)
    parts = {"stem": table.stem[shape]}
    for k in sorted(live_nodes(genotype.nodes, genotype.outputs)):
        parts[f"node {k} {genotype.nodes[k - 1].op}"] = table.op_ms(genotype.nodes[k - 1].op, shape)
    parts[f"output sum of {len(genotype.outputs)} + PReLU"] = table.output_ms(len(genotype.outputs), shape)
    parts[f"upsampler x{genotype.scale}"] = table.upsampler[shape]
    return parts


def predict_ms(
    genotype: GeneratorGenotype,
    table: LatencyTable,
    lr_size: tuple[int, int] | None = None,
    corrected: bool = True,
) -> float:
    """Predicted latency of ``Generator(genotype)`` in ms: the sum of its parts (``breakdown``), then the table's
    correction when it holds one marked ``used`` and ``corrected`` is True."""
    total = math.fsum(breakdown(genotype, table, lr_size).values())
    if corrected and table.correction is not None and table.correction.used:
        return table.correction.apply(total)
    return total


# --- timing --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_timing_args(backend: str, threads: int, repeats: int, warmup: int, device: torch.device) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if threads < 1:
        raise ConfigError(f"threads {threads}: must be at least 1")
    if repeats < 1:
        raise ConfigError(f"repeats {repeats}: must be at least 1")
    if warmup < 0:
        raise ConfigError(f"warmup {warmup}: must be at least 0")
    if backend == "onnxruntime" and device.type != "cpu":
        raise ConfigError(f"backend onnxruntime times the CPU execution provider only; device {device} needs eager")


def _onnx_export():
    # Imported when used: eager tables need neither onnx nor onnxruntime (the `export` extra).
    try:
        from darts_sr.evaluation import export
    except ModuleNotFoundError as e:
        raise ConfigError(f"backend onnxruntime needs the export extra: pip install 'darts_sr[export]' ({e})") from None
    return export


def _part_onnx(module: nn.Module, inputs: tuple[Tensor, ...]) -> bytes:
    """``module`` as an in-memory ONNX model with inputs ``x0..``, output ``y``; dynamic batch, height and width,
    exported the way ``darts_sr.evaluation.export`` exports a whole Generator."""
    export = _onnx_export()
    names = [f"x{i}" for i in range(len(inputs))]
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in names} | {"y": {0: "batch", 2: "y_h", 3: "y_w"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        for message in (".*legacy TorchScript-based ONNX export", "The feature will be removed"):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            inputs,
            buffer,
            dynamo=False,
            opset_version=export.DEFAULT_OPSET,
            input_names=names,
            output_names=["y"],
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def _runner(
    module: nn.Module, inputs: tuple[Tensor, ...], backend: str, threads: int, device: torch.device
) -> Callable[[], object]:
    """One call of ``module`` on ``inputs`` through ``backend``, ready to time."""
    module = module.eval()
    if backend == "eager":
        module = module.to(device)
        on_device = tuple(x.to(device) for x in inputs)
        return lambda: module(*on_device)
    export = _onnx_export()
    sess = export.session(_part_onnx(module, inputs), threads=threads)
    feeds = {f"x{i}": np.ascontiguousarray(x.numpy(), dtype=np.float32) for i, x in enumerate(inputs)}
    return lambda: sess.run(None, feeds)


def _time(
    fns: dict[Any, Callable[[], object]], repeats: int, warmup: int, threads: int, device: torch.device, backend: str
) -> dict[Any, list[float]]:
    """Wall milliseconds of each fn, ``repeats`` calls after ``warmup``.

    Eager: in rounds, the fns taking turns, so that load from other processes hits them alike. ONNX Runtime: one fn
    after another, each in one block, because every session owns an intra-op thread pool whose workers spin for a
    while after a run; sessions taking turns would compete with the spinning pools of the others, which no deployed
    model (one session) meets."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if backend == "eager":
        order = [name for _ in range(warmup + repeats) for name in fns]
    else:
        order = [name for name in fns for _ in range(warmup + repeats)]
    calls = dict.fromkeys(fns, 0)
    times: dict[Any, list[float]] = {name: [] for name in fns}
    with torch.no_grad(), _torch_threads(threads):
        for name in order:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            elapsed = (time.perf_counter() - start) * 1e3
            calls[name] += 1
            if calls[name] > warmup:
                times[name].append(elapsed)
    return times


def _relative_iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return None
    return onnxruntime.__version__


def provenance(
    backend: str,
    threads: int,
    device: torch.device | str,
    repeats: int,
    warmup: int,
    load_before: Sequence[float] | None = None,
) -> Provenance:
    """What a timing depends on besides the network; ``load_after`` is now."""
    device = torch.device(device)
    load_after = os.getloadavg()
    return Provenance(
        backend=backend,
        threads=threads,
        device=str(device),
        repeats=repeats,
        warmup=warmup,
        torch_version=torch.__version__,
        onnxruntime_version=_onnxruntime_version(),
        cpu_model=_cpu_model(),
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        platform=platform.platform(),
        python_version=platform.python_version(),
        load_before=tuple(load_before or load_after),
        load_after=tuple(load_after),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
    )


def warn_if_loaded(load: Sequence[float], threads: int) -> bool:
    """Warns (and says True) when other processes' load leaves fewer cores than ``threads`` free."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    loaded = load[0] + threads > cores
    if loaded:
        log.warning(
            "load average %.2f on %d cores with %d timing thread(s): other processes compete; timings will be "
            "noisy and slow (build tables on a quiet machine)",
            load[0],
            cores,
            threads,
        )
    return loaded


# --- the parts -----------------------------------------------------------------------------------------------------


class _Stem(nn.Module):
    """The Generator's input side: [0, 1] RGB -> mean shift -> 3x3 conv 3 -> C."""

    def __init__(self, channels: int):
        super().__init__()
        self.mean_shift = MeanShift()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(self.mean_shift.to_model(x))


class _Head(nn.Module):
    """The Generator's output side: the upsampler's stages, then the mean shift back to [0, 1]."""

    def __init__(self, channels: int, scale: int):
        super().__init__()
        self.mean_shift = MeanShift()
        self.upsampler = Upsampler(channels, scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.mean_shift.from_model(self.upsampler(x))


class _OutputSum(nn.Module):
    """The Generator's merge: PReLU of the sum of its output nodes (summed as ``Generator.forward`` sums them)."""

    def __init__(self):
        super().__init__()
        self.act = nn.PReLU(1)

    def forward(self, *states: Tensor) -> Tensor:
        return self.act(sum(states))


def _space_ops(ops: Iterable[str]) -> list[str]:
    ops = list(dict.fromkeys(ops))
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ConfigError(f"unknown op(s) {unknown}; known: {', '.join(OPS)}")
    return [op for op in ops if op != "none"]  # never part of a derived network; op_costs gives it 0 ms


def build_table(
    ops: Iterable[str],
    channels: int | Iterable[int],
    lr_size: tuple[int, int] | None,
    backend: str,
    threads: int,
    repeats: int,
    warmup: int,
    device: torch.device | str = "cpu",
    scale: int = 4,
    max_outputs: int = 10,
    seed: int = 0,
) -> LatencyTable:
    """Times every op of ``ops`` (C -> C at the LR size, batch 1) and the fixed parts (stem, upsampler, output sum of
    k = 1..``max_outputs`` nodes) at each of ``channels``; ``lr_size`` None is the reference size of ``scale``
    (a 720p output). Weights and inputs are random (from ``seed``): latency does not depend on their values."""
    device = torch.device(device)
    _check_timing_args(backend, threads, repeats, warmup, device)
    if scale not in REFERENCE_LR_SIZE:
        raise ConfigError(f"scale {scale}: use one of {', '.join(map(str, REFERENCE_LR_SIZE))}")
    if max_outputs < 1:
        raise ConfigError(f"max_outputs {max_outputs}: must be at least 1")
    op_names = _space_ops(ops)
    widths = [channels] if isinstance(channels, int) else list(dict.fromkeys(channels))
    if not widths or any(c < 1 for c in widths):
        raise ConfigError(f"channels {widths}: need at least one, each positive")
    h, w = lr_size or REFERENCE_LR_SIZE[scale]
    if h < 1 or w < 1:
        raise ConfigError(f"LR size {h}x{w}: must be positive")

    load_before = os.getloadavg()
    loaded = warn_if_loaded(load_before, threads)
    fns: dict[tuple, Callable[[], object]] = {}
    notes, free = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for c in widths:

            def state(c: int = c) -> Tensor:
                return torch.rand(1, c, h, w)

            for op in op_names:
                module = build_op(op, c)
                if backend == "onnxruntime" and isinstance(module, nn.Identity):
                    # Alone, an identity is a graph whose output copies its input; in a whole network's export it
                    # is no node at all (the tracer passes the tensor on), so the network pays nothing for it.
                    free.append(op)
                    continue
                fns[("op", op, c)] = _runner(module, (state(),), backend, threads, device)
            fns[("stem", c)] = _runner(_Stem(c), (torch.rand(1, 3, h, w),), backend, threads, device)
            fns[("upsampler", c)] = _runner(_Head(c, scale), (state(),), backend, threads, device)
            for k in range(1, max_outputs + 1):
                inputs = tuple(state() for _ in range(k))
                fns[("output", c, k)] = _runner(_OutputSum(), inputs, backend, threads, device)
    log.info(
        "timing %d parts (%s, %d thread(s), %s): %d calls each after %d warm-up",
        len(fns),
        backend,
        threads,
        device,
        repeats,
        warmup,
    )
    times = _time(fns, repeats, warmup, threads, device, backend)
    median = {key: statistics.median(t) for key, t in times.items()}
    for op in dict.fromkeys(free):
        median |= {("op", op, c): 0.0 for c in widths}
        notes.append(f"{op}: 0 ms, not timed (an identity, which the ONNX export of a whole network removes)")
    noisiest = max(times, key=lambda key: _relative_iqr(times[key]))

    table = LatencyTable(scale=scale, provenance=provenance(backend, threads, device, repeats, warmup, load_before))
    kind, *rest = noisiest
    label = {"op": "{} at {} ch", "stem": "stem at {} ch", "upsampler": "upsampler at {} ch"}.get(
        kind, "output sum of {1} at {0} ch"
    )
    table.provenance.noisiest_part = label.format(*rest)
    table.provenance.noisiest_relative_iqr = _relative_iqr(times[noisiest])
    table.provenance.notes = notes
    for c in widths:
        table.ops |= {(op, c, h, w): median[("op", op, c)] for op in op_names}
        table.stem[(c, h, w)] = median[("stem", c)]
        table.upsampler[(c, h, w)] = median[("upsampler", c)]
        table.output[(c, h, w)] = tuple(median[("output", c, k)] for k in range(1, max_outputs + 1))
    if not loaded:
        warn_if_loaded(table.provenance.load_after, threads)
    return table


def _generator_runner(
    genotype: GeneratorGenotype, backend: str, threads: int, lr_size: tuple[int, int], device: torch.device
) -> Callable[[], object]:
    model = Generator(genotype).eval()
    if backend == "eager":
        return _runner(model, (torch.rand(1, 3, *lr_size),), backend, threads, device)
    export = _onnx_export()
    sess = export.session(export.onnx_bytes(model), threads=threads)
    feeds = {export.INPUT_NAME: np.random.default_rng(0).random((1, 3, *lr_size), dtype=np.float32)}
    return lambda: sess.run(None, feeds)


def measure_many(
    genotypes: Sequence[GeneratorGenotype],
    backend: str,
    threads: int,
    lr_size: tuple[int, int] | None = None,
    repeats: int = 30,
    warmup: int = 5,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Median end-to-end ms of ``Generator(g)`` for each genotype (random weights, eval mode, no_grad, batch 1 at
    ``lr_size``, default the reference size of the genotype's scale), interleaved as ``build_table``'s parts are."""
    device = torch.device(device)
    _check_timing_args(backend, threads, repeats, warmup, device)
    fns = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, g in enumerate(genotypes):
            size = lr_size or REFERENCE_LR_SIZE[g.scale]
            fns[i] = _generator_runner(g, backend, threads, size, device)
    times = _time(fns, repeats, warmup, threads, device, backend)
    return [statistics.median(times[i]) for i in range(len(genotypes))]


def measure_ms(
    genotype: GeneratorGenotype,
    backend: str,
    threads: int,
    lr_size: tuple[int, int] | None = None,
    repeats: int = 30,
    warmup: int = 5,
    device: torch.device | str = "cpu",
) -> float:
    """Median end-to-end ms of ``Generator(genotype)`` (see ``measure_many``)."""
    return measure_many([genotype], backend, threads, lr_size, repeats, warmup, device)[0]


# --- validating ----------------------------------------------------------------------------------------------------


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def validate(
    table: LatencyTable,
    genotypes: Sequence[GeneratorGenotype],
    lr_size: tuple[int, int] | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    fit: bool = True,
) -> dict[str, Any]:
    """Times ``genotypes`` end to end with the table's backend, threads and device (and its repeats and warm-up
    unless given) and compares with ``predict_ms``. Returns, and records in ``table.validation``:

    - ``spearman`` (and ``spearman_p``): rank correlation of predicted and measured (None when undefined);
    - ``mape_raw``: mean absolute percentage error of the plain sum of parts, in percent;
    - with ``fit`` and 3+ genotypes, a least-squares ``measured ~ a * predicted + b`` (``a``, ``b``) with its
      in-sample ``mape_corrected`` and, with 4+, its leave-one-out ``mape_corrected_loo``;
    - ``used``: ``corrected`` when the leave-one-out error beats the raw one (and ``a > 0``), else ``raw``.

    The fitted correction is stored in ``table.correction`` (``used`` set accordingly; None without a fit), so
    ``predict_ms`` applies it from then on when used.
    """
    from scipy.stats import spearmanr

    if not genotypes:
        raise ConfigError("validate needs at least one genotype")
    prov = table.provenance
    repeats, warmup = repeats or prov.repeats, prov.warmup if warmup is None else warmup
    predicted = np.array([predict_ms(g, table, lr_size, corrected=False) for g in genotypes])
    sizes = {table.shape(g.channels, lr_size)[1:] for g in genotypes}
    if len(sizes) != 1:
        raise LatencyTableError(f"validate: the genotypes resolve to several LR sizes {sorted(sizes)}; name one")
    load_before = os.getloadavg()
    warn_if_loaded(load_before, prov.threads)
    measured = np.array(measure_many(genotypes, prov.backend, prov.threads, sizes.pop(), repeats, warmup, prov.device))
    n = len(genotypes)
    rho, p = spearmanr(predicted, measured) if n >= 3 else (math.nan, math.nan)
    result: dict[str, Any] = {
        "genotypes": n,
        "repeats": repeats,
        "warmup": warmup,
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "spearman": _finite(rho),
        "spearman_p": _finite(p),
        "mape_raw": _mape(predicted, measured),
        "a": None,
        "b": None,
        "mape_corrected": None,
        "mape_corrected_loo": None,
        "used": "raw",
    }
    table.correction = None
    if fit and n >= 3:
        a, b = (float(v) for v in np.polyfit(predicted, measured, 1))
        result |= {"a": a, "b": b, "mape_corrected": _mape(a * predicted + b, measured)}
        if n >= 4:
            loo = []
            for i in range(n):
                rest = np.arange(n) != i
                ai, bi = np.polyfit(predicted[rest], measured[rest], 1)
                loo.append(ai * predicted[i] + bi)
            result["mape_corrected_loo"] = _mape(np.array(loo), measured)
            if a > 0 and result["mape_corrected_loo"] < result["mape_raw"]:
                result["used"] = "corrected"
        table.correction = Correction(a=a, b=b, used=result["used"] == "corrected")
    result["points"] = [
        {"genotype": g.to_dict(), "predicted_ms": float(pr), "measured_ms": float(me)}
        for g, pr, me in zip(genotypes, predicted, measured)
    ]
    table.validation = result
    log.info(
        "validation over %d genotypes: Spearman %s, MAPE raw %.1f%%, corrected %s (leave-one-out %s); using %s",
        n,
        "n/a" if result["spearman"] is None else f"{result['spearman']:.3f}",
        result["mape_raw"],
        "n/a" if result["mape_corrected"] is None else f"{result['mape_corrected']:.1f}%",
        "n/a" if result["mape_corrected_loo"] is None else f"{result['mape_corrected_loo']:.1f}%",
        result["used"],
    )
    return result


def parse_lr_size(text: str, what: str = "--lr-size") -> tuple[int, int]:
    """``"180x320"`` -> (180, 320); anything else is a ConfigError naming ``what``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{what} {text!r}: expected HEIGHTxWIDTH in LR pixels, e.g. 180x320")
    return int(parts[0]), int(parts[1])


def summary(table: LatencyTable) -> str:
    """The table as readable lines: one per op and fixed part, per shape."""
    p = table.provenance
    lines = [
        f"{p.backend}, {p.threads} thread(s), {p.device} ({p.gpu or p.cpu_model}), x{table.scale}; median of "
        f"{p.repeats} after {p.warmup} warm-up; load {p.load_before[0]:.2f} -> {p.load_after[0]:.2f} on "
        f"{p.cpu_cores} cores; noisiest part {p.noisiest_part} (IQR {p.noisiest_relative_iqr:.0%} of median)"
    ]
    for shape in table.shapes():
        c, h, w = shape
        lines.append(f"{c} channels at {h}x{w}:")
        for op, ms in sorted(table.op_costs(c, (h, w)).items(), key=lambda kv: kv[1]):
            if op != "none":
                lines.append(f"  {op:<12} {ms:9.3f} ms")
        lines.append(f"  {'stem':<12} {table.stem[shape]:9.3f} ms")
        lines.append(f"  {'upsampler':<12} {table.upsampler[shape]:9.3f} ms")
        outputs = ", ".join(f"{ms:.3f}" for ms in table.output[shape])
        lines.append(f"  {'output sum':<12} k=1..{len(table.output[shape])}: {outputs} ms")
    return "\n".join(lines)
