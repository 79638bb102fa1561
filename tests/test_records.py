import json

from fractal_llm.records import (RunResult, error_summary, point_name, read_record, read_records,
                                 record_from_result, write_record)
from fractal_llm.verdict import summarize_losses


def make_result(losses):
    summary = summarize_losses(losses, planned_steps=len(losses))
    summary.update(tokens_seen=10, runtime_s=0.1, error=None)
    return RunResult(config={"matrix_lr": 0.01}, summary=summary, history={"train/loss": list(losses)})


def test_point_name_is_sorted_and_stable():
    assert point_name({"b": 0.1, "a": 2}) == "a=2,b=0.1"
    assert point_name({"a": 2, "b": 0.1}) == point_name({"b": 0.1, "a": 2})


def test_record_round_trip_keeps_non_finite_losses(tmp_path):
    record = record_from_result(make_result([2.0, float("inf")]), "x=1")
    path = write_record(record, tmp_path)
    json.loads(path.read_text())  # valid JSON despite the inf
    back = read_record(path)
    assert back.summary["verdict"] == "diverged"
    assert back.history["train/loss"][1] == float("inf")
    assert back.name == "x=1" and back.path == str(path)


def test_rewrite_replaces_and_leaves_no_temp_files(tmp_path):
    write_record(record_from_result(make_result([2.0, 1.0]), "p"), tmp_path)
    error = record_from_result(RunResult(config={}, summary=error_summary("boom", 0.5), history={}), "p")
    write_record(error, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == 1 and records[0].verdict == "error" and records[0].summary["error"] == "boom"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
