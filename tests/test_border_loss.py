"""The loss on each side of a map's border, against the first loss and a uniform guess (report/border_loss.py)."""

import json
import math

import numpy as np
import pytest

from fractal_llm.records import RunRecord
from fractal_llm.report import border_loss
from fractal_llm.report.grid import build_grid, grid_from_arrays
from fractal_llm.report.sources import local_source
from fractal_llm.report.writer import write_report
from tests.test_report import write_local_sweep

# The base model of the committed tiny-model study's records (studies/tiny_zoom): the default tiny recipe.
STUDY_BASE = {"model_id": "tiny", "repro": {"base_model": "tiny:tiny-v3-seed0-ba8f41e16cca"}}


def record(config: dict, verdict: str = "trainable") -> RunRecord:
    return RunRecord(name="p", config=config, summary={"verdict": verdict}, history=None, created_at=0.0)


def test_near_border_is_the_decided_pixels_of_the_blocks_that_hold_both_classes():
    labels = np.array([[1, 1, 1, 1],
                       [1, 1, 0, 0],
                       [1, 1, 0, np.nan],
                       [1, 1, 1, 1]], dtype=float)
    near = border_loss.near_border(labels)
    expected = np.array([[0, 1, 1, 1],
                         [0, 1, 1, 1],
                         [0, 1, 1, 0],   # the NaN pixel is on neither side
                         [0, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(near, expected)


def test_a_report_states_the_loss_on_each_side_of_its_border(tmp_path):
    """A small map of real records (synthetic loss curves through the real summaries): trainable runs fall from
    3.0 + 0.3/margin, the not-trainable ones rise from 3.0, some diverge; the vocabulary is recorded."""
    cfg, records = local_source(write_local_sweep(tmp_path / "sweep", n=16))
    for r in records:
        r.config["repro"] = {"vocab_size": 1024}
    grid = build_grid(cfg, records)
    report = write_report(grid, tmp_path / "out", title="border", sweep_config=cfg, zoom_k=0)
    loss = json.loads((tmp_path / "out" / "report.json").read_text())["border_loss"]
    assert loss == report["border_loss"]

    near = border_loss.near_border(grid.labels)
    verdicts = grid.verdicts[near]
    assert loss["points"] == near.sum() > 0
    assert loss["final_loss"]["trainable"]["n"] == np.count_nonzero(verdicts == "trainable") > 0
    assert loss["final_loss"]["not_trainable"]["n"] == np.count_nonzero(verdicts == "not_trainable") > 0
    assert loss["diverged"] == np.count_nonzero(verdicts == "diverged") > 0
    trainable, failing = loss["final_loss"]["trainable"], loss["final_loss"]["not_trainable"]
    assert trainable["min"] <= trainable["median"] <= trainable["max"] < loss["first_loss"]["max"]
    assert loss["first_loss"]["min"] == pytest.approx(3.0)
    assert 3.0 < failing["min"] <= failing["median"] <= failing["max"]
    assert loss["first_loss"]["n"] == loss["points"]  # diverged points have a first loss too
    assert loss["uniform_loss"] == pytest.approx(math.log(1024)) and loss["vocab_source"] == "repro.vocab_size"

    text = (tmp_path / "out" / "report.md").read_text()
    assert "## The loss on each side of the border" in text and "| uniform guess ln(1024) | | 6.931 | |" in text
    assert f"| final loss, trainable | {trainable['n']} | {trainable['median']:.3f} |" in text
    assert "Both sides end below the uniform guess" in text


def test_the_vocabulary_of_the_studys_records_comes_from_the_tiny_build_they_name():
    assert border_loss.vocab_size_of([record(STUDY_BASE)]) == (1024, "the tiny recipe of its base model "
                                                                     "(tiny:tiny-v3-seed0-ba8f41e16cca)")
    recorded = {**STUDY_BASE, "repro": {**STUDY_BASE["repro"], "vocab_size": 32768}}
    assert border_loss.vocab_size_of([record(recorded)])[0] == 32768  # what the run recorded comes first
    unknown, why = border_loss.vocab_size_of([record({"model_id": "/some/dir", "repro": {"base_model": "/some/dir"}})])
    assert unknown is None and "/some/dir" in why
    assert border_loss.vocab_size_of([record({"model_family": "mlp"})]) == (None, "the mlp family predicts no tokens")
    assert border_loss.vocab_size_of([record(STUDY_BASE, verdict="error")]) == (None, "no run with a result")


def test_both_sides_above_the_uniform_guess_are_called_failed_runs():
    loss = {"uniform_loss": 6.93, "final_loss": {"trainable": {"median": 7.64}, "not_trainable": {"median": 7.66}}}
    assert "fail a little less" in border_loss.verdict_sentence(loss)
    loss["final_loss"]["trainable"]["median"] = 3.0
    assert border_loss.verdict_sentence(loss).startswith("The trainable side ends below")


def test_a_map_without_records_says_it_has_no_losses(tmp_path):
    verdicts = np.full((16, 16), "not_trainable", dtype=object)
    verdicts[:, 8:] = "trainable"
    grid = grid_from_arrays("lr_input", "lr_output", np.arange(16.0), np.arange(16.0), verdicts, np.zeros((16, 16)))
    report = write_report(grid, tmp_path / "out", title="paper", zoom_k=0)
    assert report["border_loss"] == {"note": "no run records (paper mode): no per-point losses"}
    assert "no run records (paper mode)" in (tmp_path / "out" / "report.md").read_text()
