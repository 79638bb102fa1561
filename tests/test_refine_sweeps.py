"""`fractal-llm refine` on W&B: level sweeps as point lists, created one after another from the runs of the
levels so far. The server answers through the fake API of test_sources (wandb.apis.public shapes) and a
recorded wandb.sweep; W&B's own grid engine checks each level YAML."""

import math

import numpy as np
import pytest
import yaml
from test_sources import Calls, FakeApi, FakeRun

from fractal_llm.refine import refine as refine_sweeps

from fractal_llm.report import report as report_command
from fractal_llm.report.fractal import estimate_dimension
from fractal_llm.sweep import AxisArg, check_sweep, dump_sweep_yaml, expand_grid, new_sweep

N = 17


def disk(lr_input: float, lr_output: float) -> bool:
    return (math.log10(lr_input) - 0.1) ** 2 + (math.log10(lr_output) + 0.1) ** 2 < 0.7 ** 2


@pytest.fixture
def created(monkeypatch):
    import wandb
    sweeps: list[dict] = []

    def sweep(cfg, entity=None, project=None):
        sweeps.append(cfg)
        return f"lv{len(sweeps) - 1}"

    monkeypatch.setattr(wandb, "sweep", sweep)
    return sweeps


def full_yaml(tmp_path):
    axes = [AxisArg("lr_input", 0.1, 10.0, N), AxisArg("lr_output", 0.1, 10.0, N)]
    path = tmp_path / "disk.yaml"
    path.write_text(dump_sweep_yaml(new_sweep(axes, {"model_family": "mlp", "num_iterations": 5}, name="disk")))
    return path


def runs_of(cfg: dict, calls: Calls) -> list[FakeRun]:
    """Finished W&B runs of a level sweep: config as the agent delivered it (the point under grid_point)."""
    fixed = {key: p["value"] for key, p in cfg["parameters"].items() if "value" in p}
    out = []
    for k, point in enumerate(cfg["parameters"]["grid_point"]["values"]):
        trainable = disk(point["lr_input"], point["lr_output"])
        summary = {"verdict": "trainable" if trainable else "not_trainable", "score": -1.0 if trainable else 1.0}
        out.append(FakeRun(calls, f"{cfg['name']}-{k}", {"grid_point": point, **fixed}, summary, "finished",
                           "2026-12-02T10:00:00Z", [1.0]))
    return out


def test_levels_are_created_from_the_runs_so_far_until_nothing_is_left(tmp_path, created, capsys):
    full = full_yaml(tmp_path)
    out = tmp_path / "levels"
    common = ["--entity", "e", "--project", "p", "-o", str(out)]
    assert refine_sweeps.main([str(full), "--levels", "2", "--margin", "1", *common]) == 0
    level0 = created[0]
    assert len(level0["parameters"]["grid_point"]["values"]) == 25  # every 4th of 17 values: 5 x 5
    assert "fractal-llm refine: level=0 levels=2 margin=1 lattice=disk" in level0["description"]
    assert "fractal-llm agents e/p/lv0" in capsys.readouterr().out
    paths, calls, runs = ["e/p/lv0"], Calls(), {}
    while True:
        runs[f"lv{len(created) - 1}"] = runs_of(created[-1], calls)  # the newest level finished
        api = FakeApi({f"lv{k}": cfg for k, cfg in enumerate(created)}, runs, calls)
        before = len(created)
        assert refine_sweeps.main([str(full), *paths, *common], api=api) == 0
        if len(created) == before:
            break
        paths.append(f"e/p/lv{len(created) - 1}")
    done = capsys.readouterr().out
    assert "refinement done" in done and f"report: fractal-llm report --lattice {full} {' '.join(paths)}" in done
    ran = [tuple(p.values()) for cfg in created for p in cfg["parameters"]["grid_point"]["values"]]
    assert len(ran) == len(set(ran)) < N * N  # no point twice, fewer than the full lattice
    assert len(created) == 3  # levels 0, 1, 2

    result = report_command.run(["--lattice", str(full), *paths, "--out", str(tmp_path / "report"), "--zoom", "0"], api=api)
    assert result["points"] == N * N and result["runs_used"] == len(ran)
    assert result["counts"]["inferred"] == N * N - len(ran) and result["counts"]["missing"] == 0
    truth = np.array([[disk(x, y) for x in result["axes"]["values"][0]] for y in result["axes"]["values"][1]])
    # The refined map's boundary is the full map's: the same box counts as the disk at full resolution.
    assert result["fractal"]["counts"] == estimate_dimension(truth.astype(float)).to_dict()["counts"]


def test_a_level_whose_runs_have_not_finished_is_never_created_again(tmp_path, created, capsys):
    full = full_yaml(tmp_path)
    common = ["--entity", "e", "--project", "p", "-o", str(tmp_path / "levels")]
    assert refine_sweeps.main([str(full), "--levels", "2", "--margin", "1", *common]) == 0
    calls = Calls()
    runs = runs_of(created[0], calls)
    for done in (0, 10):  # no run yet (the agents not started), then 10 of 25 finished
        api = FakeApi({"lv0": created[0]}, {"lv0": runs[:done]}, calls)
        assert refine_sweeps.main([str(full), "e/p/lv0", *common], api=api) == 0
        assert len(created) == 1
        assert f"level 0: {25 - done} points have no verdict yet" in capsys.readouterr().out
    api = FakeApi({"lv0": created[0]}, {"lv0": runs}, calls)
    assert refine_sweeps.main([str(full), "e/p/lv0", *common], api=api) == 0
    assert len(created) == 2 and "level=1 levels=2" in created[1]["description"]


def test_a_level_yaml_passes_sweep_check_and_wandbs_engine_hands_out_exactly_its_points(tmp_path, created,
                                                                                        grid_engine):
    assert refine_sweeps.main([str(full_yaml(tmp_path)), "--levels", "3", "--entity", "e", "--project", "p",
                               "-o", str(tmp_path / "levels")]) == 0
    path = next((tmp_path / "levels").glob("*.yaml"))
    cfg = yaml.safe_load(path.read_text())
    spec = check_sweep(cfg)
    handed, runs = [], []
    while (run := grid_engine.next_run(cfg, runs, validate=True)) is not None:
        runs.append(run)
        handed.append({**spec.fixed, **run.config["grid_point"]["value"]})
    assert handed == expand_grid(spec) and len(handed) == 9  # every 8th of 17 values: 3 x 3


def test_continuing_with_other_levels_or_margin_is_refused(tmp_path, created):
    full = full_yaml(tmp_path)
    common = ["--entity", "e", "--project", "p", "-o", str(tmp_path / "levels")]
    assert refine_sweeps.main([str(full), "--levels", "2", *common]) == 0
    calls = Calls()
    api = FakeApi({"lv0": created[0]}, {"lv0": runs_of(created[0], calls)}, calls)
    with pytest.raises(refine_sweeps.RefineSweepError, match="made with --levels 2 --margin 1"):
        refine_sweeps.main([str(full), "e/p/lv0", "--levels", "3", *common], api=api)
