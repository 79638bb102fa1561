"""Run names and map groups in W&B: a run's display name has 4 significant digits (more where its map needs
them to tell two points apart), and every run of a map (its level and refill sweeps too) is in the map's group."""

from fractal_llm.records import record_name, run_name
from fractal_llm.refine.levels import RefinePlan
from fractal_llm.refine.refine import level_config
from fractal_llm.runners import agent as worker
from fractal_llm.runners.local import make_tasks
from fractal_llm.sweep import AxisArg, axis_values, check_sweep, expand_grid, new_sweep, refill_config, sweep_map
from wandb_offline import offline_runs


def test_run_names_have_4_significant_digits_and_stay_unique_within_the_map():
    """Before: names printed full float reprs (`lr_input=0.002702763738792682`)."""
    wide = {"lr_input": axis_values(1e-4, 1.0, 64), "lr_output": axis_values(1e-5, 0.1, 64)}
    assert run_name({"lr_input": 0.002702763738792682, "lr_output": 1e-05, "steps": 20}, wide) \
        == "lr_input=0.002703,lr_output=1e-05,steps=20"
    deep = axis_values(1.0, 1.0001, 64)  # a deep zoom frame: 4 digits would name all 64 values "1"
    names = {run_name({"lr_input": x, "lr_output": y}, {"lr_input": deep, "lr_output": wide["lr_output"]})
             for x in deep for y in wide["lr_output"][:3]}
    assert len(names) == 64 * 3 and max(map(len, names)) < 50


def test_the_agent_names_its_run_short_and_puts_it_in_the_maps_group(tmp_path, monkeypatch):
    """Before: the run was named by the exact record name and had no group."""
    import wandb
    from wandb.sdk.lib import config_util
    point = {"lr_input": 0.002702763738792682, "lr_output": 10.0}
    params = tmp_path / "config-run1.yaml"
    config_util.save_config_file_from_dict(str(params), {"model_family": {"value": "mlp"},
                                                         "num_iterations": {"value": 5},
                                                         **{k: {"value": v} for k, v in point.items()}})
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))  # what wandb.agent hands the run (its own writer)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("FRACTAL_LLM_RUNS_DIR", str(tmp_path / "runs"))
    wandb.teardown()
    try:
        worker.agent_function(("lr_input", "lr_output"), (("lr_input", [point["lr_input"], 0.1]),
                                                          ("lr_output", [10.0, 100.0])), "my_map")
    finally:
        wandb.teardown()
    (run,) = offline_runs(tmp_path / "wandb").values()
    assert (run["name"], run["group"]) == ("lr_input=0.002703,lr_output=10", "my_map")
    (record,) = (tmp_path / "runs").glob("*.json")
    assert record.name == record_name(point) + ".json"  # the record keeps the exact values


def test_the_local_runners_gpt_tasks_carry_the_short_name():
    spec = check_sweep(new_sweep([AxisArg("matrix_lr", 1e-4, 1.0, 5), AxisArg("unembedding_lr", 1e-5, 0.1, 5)],
                                 {"num_tokens": 2048}, name="m"))
    points = expand_grid(spec)
    tasks = make_tasks(points, [str(i) for i in range(len(points))], 1, spec.axes)
    assert [t.run_names for t in tasks][:2] == [["matrix_lr=0.0001,unembedding_lr=1e-05"],
                                                ["matrix_lr=0.0001,unembedding_lr=0.0001"]]


def test_refill_and_level_sweeps_name_the_map_their_runs_belong_to():
    cfg = new_sweep([AxisArg("lr_input", 0.5, 2.0, 4), AxisArg("lr_output", 0.5, 2.0, 4)],
                    {"model_family": "mlp", "num_iterations": 5}, name="grid")
    assert sweep_map(cfg) == "grid"
    level = level_config(cfg, RefinePlan((4, 4), 1, 1), 0, [(0, 0), (3, 3)])
    refill = refill_config(level, [{"lr_input": 0.5, "lr_output": 2.0}], "grid-level0-refill")
    assert ((sweep_map(level), sweep_map(refill), sweep_map(refill_config(cfg, [{"lr_input": 0.5, "lr_output": 0.5}], "r")))
            == ("grid",) * 3)
    check_sweep(level), check_sweep(refill)  # the line is part of a description W&B accepts
