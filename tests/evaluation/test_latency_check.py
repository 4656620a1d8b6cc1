"""darts-sr latency-check: a genotype timed end to end beside the table's prediction and a search's target."""

import json

import pytest

from conftest import write_latency_table
from darts_sr.commands import latency_check
from darts_sr.evaluation.latency import LatencyTable, predict_ms
from darts_sr.nets.genotype import GeneratorGenotype, Node

TINY = GeneratorGenotype((Node("conv_3x3", 0), Node("conv_3x3", 1)), (2,), channels=4, scale=4)


@pytest.fixture
def table(tmp_path):
    ops = {"conv_3x3": 1.5, "skip": 0.1}
    return write_latency_table(tmp_path / "t.json", ops, 0.5, 3.0, (0.2, 0.3), sizes=((180, 320),))


def test_rows_hold_the_prediction_the_timing_and_both_errors(tmp_path, table, one_thread, capsys):
    genotype = tmp_path / "g.json"
    genotype.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "check.json"
    argv = [str(genotype), "--table", str(table), "--target-ms", "10", "--repeats", "3", "--warmup", "1"]
    assert latency_check.main([*argv, "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["predicted_ms"] == pytest.approx(predict_ms(TINY, LatencyTable.load(table)))
    assert row["predicted_ms"] == pytest.approx(0.5 + 1.5 + 1.5 + 0.2 + 3.0)  # stem, two nodes, one output, upsampler
    assert row["measured_ms"] > 0
    assert row["table_error"] == pytest.approx(row["measured_ms"] / row["predicted_ms"] - 1)
    assert row["target_error"] == pytest.approx(row["measured_ms"] / 10 - 1)
    assert "vs target 10 ms" in capsys.readouterr().out


def test_a_reference_timed_alongside_takes_the_machines_drift_out(tmp_path, table, one_thread):
    genotype = tmp_path / "g.json"
    genotype.write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "check.json"
    argv = [str(genotype), "--table", str(table), "--reference", str(genotype), "--target-ms", "10"]
    assert latency_check.main([*argv, "--repeats", "3", "--warmup", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    row, reference = record["rows"]
    assert record["drift"] == pytest.approx(reference["measured_ms"] / reference["predicted_ms"])
    assert row["drift_corrected_ms"] == pytest.approx(row["measured_ms"] / record["drift"])
    assert row["drift_corrected_target_error"] == pytest.approx(row["drift_corrected_ms"] / 10 - 1)
    assert reference["drift_corrected_ms"] == pytest.approx(reference["predicted_ms"])  # by construction


def test_a_genotype_the_table_cannot_price_is_one_error_line_before_any_timing(table, capsys):
    # 16 channels: the table holds 4 only
    assert latency_check.main(["tpsr", "--table", str(table)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "16 channels" in err[0]
