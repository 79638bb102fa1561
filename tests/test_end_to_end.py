"""The embedded default's path end to end on a small grid: sweep YAML -> local runner -> report."""

import json
from pathlib import Path

import yaml

from fractal_llm.report import report as report_command

from fractal_llm.runners import local as runner
from fractal_llm.records import SUMMARY_KEYS, read_records
from fractal_llm.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def small_smoke(tmp_path: Path) -> Path:
    """The shipped smoke.yaml on its 2x2 corners (the smallest grid that still crosses the boundary), fewer steps."""
    cfg = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    for axis in ("matrix_lr", "unembedding_lr"):
        values = cfg["parameters"][axis]["values"]
        cfg["parameters"][axis]["values"] = [values[0], values[-1]]
    cfg["parameters"]["num_iterations"] = {"value": 8}
    cfg["parameters"]["max_seq_len"] = {"value": 192}
    cfg["name"] = "smoke2"
    path = tmp_path / "smoke2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_local_smoke_run_then_report_writes_every_file(tmp_path, tiny_base):
    spec = load_sweep(small_smoke(tmp_path))
    runs = tmp_path / "runs"
    assert runner.run_sweep(spec, runs, workers=1, wandb_mode="disabled") == 0
    records = read_records(runs)
    assert len(records) == 4
    assert all(set(SUMMARY_KEYS) <= set(r.summary) for r in records)
    verdicts = {r.verdict for r in records}
    assert "error" not in verdicts and len(verdicts) >= 2  # the corners differ
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    assert runner.run_sweep(spec, runs, workers=1, wandb_mode="disabled") == 0  # resume: nothing left to run
    assert {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")} == before

    out = tmp_path / "report"
    result = report_command.run(["--local", str(runs), "--out", str(out), "--zoom", "1"])
    on_disk = json.loads((out / "report.json").read_text())
    assert sum(on_disk["counts"].values()) == 4 and on_disk["counts"]["missing"] == 0
    assert on_disk["counts"] == result["counts"]
    assert on_disk["fractal"]["too_coarse"] is True  # 2x2 can't support a dimension
    assert on_disk["axes"]["names"] == ["matrix_lr", "unembedding_lr"]
    for name in ("report.md", "score_map.png", "boundary.png", "box_counting.png", "overview.png"):
        assert (out / name).stat().st_size > 0, name

    # README's main job goes on: a transect through the border the map found ends with a measured figure.
    from fractal_llm.cli import main as cli
    line = tmp_path / "line"
    assert cli(["transect", str(small_smoke(tmp_path)), "--through-from", str(out), "--along", "matrix_lr",
                "--span", "0.64", "--points", "32", "--out", str(line), "--workers", "1"]) == 0
    assert cli(["report", "--local", str(line), "--out", str(tmp_path / "line_report")]) == 0
    transect = json.loads((tmp_path / "line_report" / "report.json").read_text())
    assert transect["points"] == 32 and len(transect["transect"]["interval"]) == 2
    assert transect["scope"] == {"model_id": "tiny", "num_iterations": 8, "lr_schedule": "cosine", "seed": 0,
                                 "trainable_param_groups": "matrix,unembedding"}
