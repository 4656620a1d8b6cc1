"""ONNX export of a ``Generator``, and ONNX Runtime sessions to run the result.

The ONNX model keeps the Generator's contract: input ``lr`` float32 (B, 3, H, W) RGB in [0, 1], output ``sr``
float32 (B, 3, sH, sW), about [0, 1] and not clamped; batch, height and width are dynamic. The genotype (JSON) and
the scale are stored in the model's ``metadata_props``, so the file describes itself.

Exporter: PyTorch's TorchScript exporter (``dynamo=False``). The torch.export-based one needs ``onnxscript``, which
is not a dependency here; the TorchScript exporter traces this static graph exactly and its newest opset, 20, runs
in ONNX Runtime (every op used, Conv / PRelu / DepthToSpace / Add / Mul / Sub / Div, is long stable).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from google.protobuf.message import DecodeError

from darts_sr.io import atomic_write_bytes
from darts_sr.nets.genotype import GeneratorGenotype, GenotypeError
from darts_sr.nets.networks import Generator

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
METADATA_GENOTYPE = "darts_sr.nets.genotype"
METADATA_SCALE = "darts_sr.scale"

# The TorchScript exporter's newest opset; DepthToSpace's "CRD" mode (PixelShuffle) needs 11.
DEFAULT_OPSET = 20
MIN_OPSET = 11

# Trace input: odd, non-square, so no size is special-cased in the graph; dynamic axes free all of them.
_TRACE_SHAPE = (1, 3, 23, 31)

# Export check, ORT vs PyTorch on the 0-255 output scale. TPSR computes in 0-255 units, so float32 reordering noise
# reaches ~5e-4 there on white noise (tests pin 1e-3 on real images); a wrong graph is off by whole grey levels.
# A hundredth of a grey level never changes a rounded pixel and leaves trained weights headroom.
MAX_ABS_DIFF_255 = 1e-2


class ExportError(ValueError):
    """An export that cannot be made or written; the message names the file or option."""


def onnx_bytes(model: Generator, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialised ONNX model of ``model`` (eval mode), with dynamic batch, height and width and metadata."""
    if not MIN_OPSET <= opset <= DEFAULT_OPSET:
        raise ExportError(f"--opset {opset}: the TorchScript exporter supports opsets {MIN_OPSET}..{DEFAULT_OPSET}")
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is chosen deliberately (see the module docstring); its deprecation notice
            # would only repeat that on every export.
            for message in (".*legacy TorchScript-based ONNX export", "The feature will be removed"):
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            torch.onnx.export(
                model,
                (torch.zeros(_TRACE_SHAPE),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "sr_height", 3: "sr_width"},
                },
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = f"darts_sr Generator x{model.genotype.scale}: lr (B,3,H,W) in [0,1] -> sr (B,3,sH,sW)"
    onnx.helper.set_model_props(
        proto,
        {METADATA_GENOTYPE: json.dumps(model.genotype.to_dict()), METADATA_SCALE: str(model.genotype.scale)},
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export_onnx(model: Generator, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> float:
    """Exports ``model`` to ``path`` atomically, after checking ONNX Runtime agrees with PyTorch.

    Returns the largest |ORT - PyTorch| on the 0-255 output scale for a smooth random (2, 3, 29, 41) input; raises
    ExportError (and writes nothing) when it exceeds ``MAX_ABS_DIFF_255``.
    """
    path = Path(path)
    data = onnx_bytes(model, opset)
    # Smooth, image-like content: upsampled coarse noise (white noise drives activations far beyond real images').
    coarse = torch.rand(2, 3, 8, 11, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(coarse, size=(29, 41), mode="bilinear", align_corners=False)
    diff = max_abs_diff_255(model, session(data, threads=1), x)
    if not diff <= MAX_ABS_DIFF_255:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} on the 0-255 scale; not written")
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ExportError(f"{path}: cannot write ({e.strerror or e})") from None
    return diff


def read_genotype(model: str | os.PathLike | bytes) -> GeneratorGenotype:
    """The genotype stored in an exported model's metadata (a path or the serialised bytes)."""
    name = "<bytes>" if isinstance(model, bytes) else str(model)
    try:
        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model))
    except (OSError, DecodeError) as e:
        raise ExportError(f"{name}: not a readable ONNX model ({e})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_GENOTYPE not in props:
        raise ExportError(f"{name}: no {METADATA_GENOTYPE} in metadata_props; not exported by darts_sr")
    try:
        return GeneratorGenotype.from_dict(json.loads(props[METADATA_GENOTYPE]))
    except (json.JSONDecodeError, GenotypeError) as e:
        raise ExportError(f"{name}: stored genotype: {e}") from None


def session(
    model: str | os.PathLike | bytes,
    threads: int | None = None,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    sequential: bool = True,
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; ``threads`` sets intra-op threads (None: ORT's default, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = optimization
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if sequential else ort.ExecutionMode.ORT_PARALLEL
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_session(sess: ort.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, 3, sH, sW), through ONNX Runtime."""
    (sr,) = sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
    return torch.from_numpy(sr)


def max_abs_diff_255(model: Generator, sess: ort.InferenceSession, x: torch.Tensor) -> float:
    """Largest |ORT - PyTorch| over the output of ``x`` (B, 3, H, W) in [0, 1], on the 0-255 scale."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        model.train(was_training)
    got = run_session(sess, x)
    if got.shape != expected.shape:
        return float("inf")
    return float((got - expected).abs().max()) * 255.0
