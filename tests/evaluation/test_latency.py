"""Latency tables: every op and fixed part timed, provenance, JSON, predictions as sums of parts, validation, CLI.

Timings here are plumbing checks on a tiny space (4 channels, 8x8), not measurements: only their presence, sign and
arithmetic are tested, never their size.
"""

import copy
import datetime
import json
import math

import numpy as np
import pytest

from darts_sr.commands import main as darts_sr
from darts_sr.evaluation.latency import (
    Correction,
    LatencyTable,
    LatencyTableError,
    breakdown,
    build_table,
    measure_ms,
    predict_ms,
    validate,
)
from darts_sr.nets.genotype import GeneratorGenotype, Node

OPS = ("conv_3x3", "skip")
C, LR = 4, (8, 8)
SHAPE = (C, *LR)
MAX_OUTPUTS = 3
# node 1 <- stem: conv; node 2 <- node 1: skip; node 3 <- stem: conv; output = PReLU(node 2 + node 3)
HAND_BUILT = GeneratorGenotype((Node("conv_3x3", 0), Node("skip", 1), Node("conv_3x3", 0)), (2, 3), C, 4)
SMALL = [
    HAND_BUILT,
    GeneratorGenotype((Node("skip", 0),), (1,), C, 4),
    GeneratorGenotype((Node("conv_3x3", 0),), (1,), C, 4),
    GeneratorGenotype((Node("conv_3x3", 0), Node("conv_3x3", 1), Node("conv_3x3", 2)), (3,), C, 4),
]


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return build_table(OPS, C, LR, "eager", threads=1, repeats=3, warmup=1, max_outputs=MAX_OUTPUTS)


def test_table_has_every_op_fixed_part_and_provenance(table):
    assert set(table.ops) == {(op, *SHAPE) for op in OPS}
    assert table.shapes() == [SHAPE] and table.scale == 4
    assert table.stem[SHAPE] > 0 and table.upsampler[SHAPE] > 0
    assert len(table.output[SHAPE]) == MAX_OUTPUTS and all(ms > 0 for ms in table.output[SHAPE])
    assert all(ms > 0 for ms in table.ops.values())
    assert table.op_costs(C) == {"conv_3x3": table.ops[("conv_3x3", *SHAPE)], "skip": table.ops[("skip", *SHAPE)]} | {
        "none": 0.0
    }
    p = table.provenance
    assert (p.backend, p.threads, p.device, p.repeats, p.warmup) == ("eager", 1, "cpu", 3, 1)
    assert p.torch_version and p.cpu_model and p.cpu_cores >= 1 and p.platform and p.python_version
    assert len(p.load_before) == len(p.load_after) == 3
    assert datetime.datetime.fromisoformat(p.date).tzinfo is not None
    assert p.noisiest_part and p.noisiest_relative_iqr >= 0 and p.notes == []
    assert table.correction is None and table.validation is None


def test_json_round_trip_and_a_bad_file_names_itself(table, tmp_path):
    path = tmp_path / "table.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    data = json.loads(path.read_text())
    assert data["provenance"]["backend"] == "eager" and {r["op"] for r in data["ops"]} == set(OPS)
    with_correction = copy.deepcopy(table)
    with_correction.correction = Correction(a=1.5, b=-0.25, used=True)
    with_correction.validation = {"spearman": 0.9}
    with_correction.save(path)
    assert LatencyTable.load(path) == with_correction

    del data["stem"]
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="table.json: malformed latency table"):
        LatencyTable.load(path)
    path.write_text("{")
    with pytest.raises(LatencyTableError, match="table.json: not valid JSON"):
        LatencyTable.load(path)


def test_prediction_is_the_sum_of_the_parts(table):
    conv, skip = table.ops[("conv_3x3", *SHAPE)], table.ops[("skip", *SHAPE)]
    parts = [table.stem[SHAPE], conv, skip, conv, table.output[SHAPE][2 - 1], table.upsampler[SHAPE]]
    assert predict_ms(HAND_BUILT, table) == math.fsum(parts)
    assert sorted(breakdown(HAND_BUILT, table).values()) == sorted(parts)

    corrected = copy.deepcopy(table)
    corrected.correction = Correction(a=2.0, b=0.5, used=True)
    assert predict_ms(HAND_BUILT, corrected) == 2.0 * math.fsum(parts) + 0.5
    assert predict_ms(HAND_BUILT, corrected, corrected=False) == math.fsum(parts)
    corrected.correction.used = False
    assert predict_ms(HAND_BUILT, corrected) == math.fsum(parts)

    # More outputs than were timed: the output term follows a least-squares line through k = 1..N.
    five = GeneratorGenotype(tuple(Node("skip", 0) for _ in range(5)), (1, 2, 3, 4, 5), C, 4)
    slope, intercept = np.polyfit([1, 2, 3], table.output[SHAPE], 1)
    assert breakdown(five, table)["output sum of 5 + PReLU"] == pytest.approx(5 * slope + intercept)


def test_prediction_refuses_what_the_table_lacks(table):
    with pytest.raises(LatencyTableError, match="no LR size at 8 channels"):
        predict_ms(GeneratorGenotype(HAND_BUILT.nodes, HAND_BUILT.outputs, 8, 4), table)
    with pytest.raises(LatencyTableError, match="no entries at 4 channels, 8x16"):
        predict_ms(HAND_BUILT, table, lr_size=(8, 16))
    with pytest.raises(LatencyTableError, match="x4; the genotype is x2"):
        predict_ms(GeneratorGenotype(HAND_BUILT.nodes, HAND_BUILT.outputs, C, 2), table)
    with pytest.raises(LatencyTableError, match="no entry for op 'sep_3x3'"):
        predict_ms(GeneratorGenotype((Node("sep_3x3", 0),), (1,), C, 4), table)


def test_validate_reports_rank_correlation_and_errors(table):
    table = copy.deepcopy(table)
    result = validate(table, SMALL, repeats=2, warmup=0)
    assert {"spearman", "spearman_p", "mape_raw", "mape_corrected", "mape_corrected_loo", "a", "b", "used"} <= set(
        result
    )
    assert -1 <= result["spearman"] <= 1 and result["mape_raw"] >= 0 and result["mape_corrected_loo"] >= 0
    assert result["used"] in ("raw", "corrected") and len(result["points"]) == len(SMALL)
    assert all(p["measured_ms"] > 0 for p in result["points"])
    assert table.validation is result
    assert table.correction == Correction(result["a"], result["b"], result["used"] == "corrected")


def test_onnxruntime_table_and_end_to_end_timing():
    table = build_table(OPS, C, LR, "onnxruntime", threads=1, repeats=2, warmup=1, max_outputs=2)
    p = table.provenance
    assert p.backend == "onnxruntime" and p.onnxruntime_version
    assert table.ops[("conv_3x3", *SHAPE)] > 0 and table.stem[SHAPE] > 0 and table.upsampler[SHAPE] > 0
    assert table.ops[("skip", *SHAPE)] == 0.0 and any(note.startswith("skip: 0 ms") for note in p.notes)
    assert len(table.output[SHAPE]) == 2
    assert measure_ms(HAND_BUILT, "onnxruntime", threads=1, lr_size=LR, repeats=2, warmup=1) > 0
    assert predict_ms(HAND_BUILT, table) > 0


def test_cli_writes_a_validated_table(tmp_path):
    out = tmp_path / "table.json"
    argv = ["--backend", "eager", "--threads", "1", "--lr-size", "8x8", "--channels", "4", "--ops", "conv_3x3,skip"]
    argv += ["--max-outputs", "3", "--repeats", "2", "--warmup", "0", "--out", str(out), "--validate", "3"]
    assert darts_sr(["latency-table", *argv, "--seed", "1"]) == 0
    table = LatencyTable.load(out)
    assert set(table.ops) == {(op, *SHAPE) for op in OPS} and table.provenance.repeats == 2
    v = table.validation
    assert v["genotypes"] == 3 and v["seed"] == 1 and "spearman" in v and "mape_raw" in v
    assert len({json.dumps(p["genotype"]) for p in v["points"]}) == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--lr-size", "12"], "--lr-size '12': expected HEIGHTxWIDTH"),
        (["--lr-size", "0x8"], "--lr-size '0x8'"),
        (["--threads", "0"], "threads 0"),
        (["--ops", "conv_9x9"], "unknown op(s) ['conv_9x9']"),
        (["--validate", "2"], "--validate 2"),
        (["--backend", "onnxruntime", "--device", "cuda"], "cuda"),
    ],
)
def test_cli_bad_input_is_one_error_line(bad, message, tmp_path, capsys):
    out = tmp_path / "table.json"
    argv = ["--backend", "eager", "--threads", "1", "--lr-size", "8x8", "--out", str(out)]
    assert darts_sr(["latency-table", *argv, *bad]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()
