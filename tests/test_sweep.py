"""Sweep YAMLs: generation, the checker's rules (one message per rule), W&B's grid order."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fractal_llm import cli, paths
from fractal_llm.sweep import (MODULE_COMMAND, AxisArg, SweepError, axis_values, check_sweep, dump_sweep_yaml,
                               expand_grid, format_float, load_sweep, main, new_sweep)


def base_cfg(**params) -> dict:
    """A valid 2x3 grid; keyword arguments replace or add parameters."""
    parameters = {
        "matrix_lr": {"values": [1.0e-3, 1.0e-2]},
        "unembedding_lr": {"values": [1.0e-4, 1.0e-3, 1.0e-2]},
        "num_iterations": {"value": 5},
    }
    parameters.update(params)
    return {"method": "grid", "command": list(MODULE_COMMAND), "parameters": parameters}


def check_error(cfg: dict) -> str:
    with pytest.raises(SweepError) as info:
        check_sweep(cfg)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- floats

@pytest.mark.parametrize("x", [1e-4, 3.1622776601683795e-05, 0.1, 3.0, 0.0, -2.5, 1e300, 5e-324, 1 / 3,
                               123456789.123, 1e22])
def test_format_float_reads_back_exactly_as_a_float(x):
    text = format_float(x)
    value = yaml.safe_load(text)
    assert isinstance(value, float)
    assert value == x


def test_format_float_examples():
    assert format_float(1e-4) == "1.0e-04"
    assert format_float(3.1622776601683795e-05) == "3.1622776601683795e-05"
    assert format_float(3.0) == "3.0e+00"
    assert yaml.safe_load("1e-4") == "1e-4"  # the gotcha format_float avoids: YAML 1.1 reads a string


def test_format_float_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        format_float(math.inf)


def test_axis_values_log_and_lin_endpoints_exact():
    log = axis_values(1e-4, 3.0, 16)
    assert len(log) == 16 and log[0] == 1e-4 and log[-1] == 3.0
    ratios = [b / a for a, b in zip(log, log[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)
    lin = axis_values(0.0, 1.0, 5, "lin")
    assert lin == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_axis_values_rejects_bad_log_bounds():
    with pytest.raises(SweepError, match="log axis needs positive bounds"):
        axis_values(0.0, 1.0, 4)


# ---------------------------------------------------------------------------------------------- sweep new

def test_new_output_passes_check_and_round_trips(tmp_path):
    out = tmp_path / "s.yaml"
    rc = main(["new", "--axis", "matrix_lr=1e-4:3:16", "--axis", "num_tokens=1e4:1e6:8",
               "--set", "max_seq_len=256", "--set", "warmup_frac=0.06", "--set", "trainable_param_groups=matrix,lm_head",
               "--note", "a comment", "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# a comment\n") and "fractal-llm sweep new --axis matrix_lr=1e-4:3:16" in text
    raw = yaml.safe_load(text)
    assert raw["parameters"]["matrix_lr"]["values"] == axis_values(1e-4, 3.0, 16)  # exact equality
    tokens = raw["parameters"]["num_tokens"]["values"]
    assert all(type(v) is int for v in tokens) and tokens[0] == 10000 and tokens[-1] == 1000000
    assert raw["parameters"]["warmup_frac"] == {"value": 0.06}
    spec = load_sweep(out)
    assert spec.name == "s" and spec.n_points == 16 * 8
    assert spec.axis_names == ["matrix_lr", "num_tokens"]


def test_new_sweep_rejects_int_axis_that_rounds_to_duplicates():
    with pytest.raises(SweepError, match="rounding gives duplicates"):
        new_sweep([AxisArg("num_tokens", 1, 4, 8), AxisArg("matrix_lr", 1e-3, 1e-2, 2)], {})


def test_new_sweep_rejects_axis_also_set():
    with pytest.raises(SweepError, match="also given with --set"):
        new_sweep([AxisArg("matrix_lr", 1e-3, 1e-2, 2), AxisArg("unembedding_lr", 1e-3, 1e-2, 2)],
                  {"matrix_lr": 0.1})


def test_new_cli_unknown_axis_name(tmp_path, capsys):
    rc = cli.main(["sweep", "new", "--axis", "matrix_lrr=1e-3:1:4", "--axis", "unembedding_lr=1e-3:1:4", "-o",
                   str(tmp_path / "x.yaml")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "matrix_lrr" in err and "did you mean 'matrix_lr'" in err
    assert not (tmp_path / "x.yaml").exists()


def test_dump_sweep_yaml_round_trips_a_full_config():
    cfg = new_sweep([AxisArg("lr_input", 1.0, 1e4, 7), AxisArg("lr_output", 31.622776601683793, 1000.0, 5)],
                    {"model_family": "mlp", "num_iterations": 50}, name="t")
    assert yaml.safe_load(dump_sweep_yaml(cfg)) == cfg


# ---------------------------------------------------------------------------------------------- check: one test per rule

def test_check_accepts_valid_and_names_from_yaml_or_stem(tmp_path):
    spec = check_sweep(base_cfg())
    assert spec.name == "sweep" and spec.fixed == {"num_iterations": 5}
    path = tmp_path / "my_grid.yaml"
    path.write_text(dump_sweep_yaml(base_cfg()))
    assert load_sweep(path).name == "my_grid"
    path.write_text(dump_sweep_yaml({"name": "named", **base_cfg()}))
    assert load_sweep(path).name == "named"


def test_check_rejects_method_other_than_grid():
    msg = check_error({**base_cfg(), "method": "bayes"})
    assert "method='bayes'" in msg and "only grid" in msg


def test_one_axis_is_a_transect():
    spec = check_sweep(base_cfg(unembedding_lr={"value": 1.0e-3}))
    assert spec.axis_names == ["matrix_lr"] and spec.fixed["unembedding_lr"] == 1.0e-3
    msg = check_error(base_cfg(unembedding_lr={"value": 1.0e-3}, matrix_lr={"value": 1.0e-3}))
    assert "0 axes (none)" in msg and "one for a transect" in msg


def test_check_rejects_three_axes():
    msg = check_error(base_cfg(seed={"values": [0, 1]}))
    assert "3 axes (matrix_lr, seed, unembedding_lr)" in msg


def test_check_rejects_axis_with_one_value():
    msg = check_error(base_cfg(matrix_lr={"values": [1.0e-3]}))
    assert "parameters.matrix_lr.values=[0.001]" in msg and "at least 2 values" in msg


def test_check_rejects_duplicate_values():
    msg = check_error(base_cfg(unembedding_lr={"values": [1.0e-4, 1.0e-3, 1.0e-4]}))
    assert "parameters.unembedding_lr.values[2]=0.0001: duplicate of parameters.unembedding_lr.values[0]" in msg


def test_check_duplicates_after_whole_number_normalisation():
    # W&B treats 3e6 and 3000000 as the same point; so do we (num_tokens is an int field).
    msg = check_error(base_cfg(matrix_lr={"value": 1.0e-3}, num_tokens={"values": [3000000, 3.0e+6]}))
    assert "parameters.num_tokens.values[1]=3000000.0: duplicate" in msg


def test_check_rejects_non_monotonic_values():
    msg = check_error(base_cfg(unembedding_lr={"values": [1.0e-4, 1.0e-2, 1.0e-3]}))
    assert "parameters.unembedding_lr.values[2]=0.001" in msg and "monotonic" in msg


def test_check_accepts_decreasing_values():
    spec = check_sweep(base_cfg(unembedding_lr={"values": [1.0e-2, 1.0e-3, 1.0e-4]}))
    assert dict(spec.axes)["unembedding_lr"] == [1.0e-2, 1.0e-3, 1.0e-4]


def test_check_rejects_unknown_parameter_with_suggestion():
    cfg = base_cfg()
    cfg["parameters"]["unembeding_lr"] = cfg["parameters"].pop("unembedding_lr")
    msg = check_error(cfg)
    assert "unembeding_lr: not a train-config field" in msg and "did you mean 'unembedding_lr'" in msg


def test_check_rejects_number_yaml_read_as_string():
    cfg = yaml.safe_load("method: grid\ncommand: [a, -m, fractal_llm.train, '${args}']\nparameters:\n"
                         "  matrix_lr: {values: [1e-4, 1.0e-03]}\n  unembedding_lr: {values: [1.0e-4, 1.0e-3]}\n")
    msg = check_error(cfg)
    assert "parameters.matrix_lr.values[0]: matrix_lr='1e-4'" in msg and "YAML read '1e-4' as a string" in msg


def test_check_rejects_wrong_type_for_fixed_value():
    msg = check_error(base_cfg(seed={"value": 0.5}))
    assert "parameters.seed.value: seed=0.5: must be an integer" in msg


def test_check_rejects_value_out_of_range():
    msg = check_error(base_cfg(warmup_frac={"value": 1.5}))
    assert "parameters.warmup_frac.value: warmup_frac=1.5: must be >= 0.0 and < 1.0" in msg


def test_check_rejects_choice_not_allowed():
    msg = check_error(base_cfg(lr_schedule={"value": "linear"}))
    assert "lr_schedule='linear': allowed values are cosine, constant" in msg


def test_check_rejects_non_numeric_axis():
    msg = check_error(base_cfg(matrix_lr={"value": 1.0e-3}, lr_schedule={"values": ["constant", "cosine"]}))
    assert "parameters.lr_schedule.values" in msg and "not a numeric field" in msg


def test_check_rejects_non_grid_parameter_spec():
    msg = check_error(base_cfg(seed={"distribution": "int_uniform", "min": 0, "max": 3}))
    assert "parameters.seed=" in msg and "`value: X` (fixed) or `values: [...]`" in msg


def test_check_rejects_command_without_args():
    msg = check_error({**base_cfg(), "command": ["${env}", "${interpreter}", "-m", "fractal_llm.train"]})
    assert "does not pass ${args} to fractal_llm.train" in msg


def test_check_rejects_command_not_running_train_module():
    msg = check_error({**base_cfg(), "command": ["${env}", "${interpreter}", "train.py", "${args}"]})
    assert "does not run the train module (-m fractal_llm.train)" in msg and "train.py" in msg


def test_check_rejects_missing_command():
    cfg = base_cfg()
    del cfg["command"]
    assert "command: missing" in check_error(cfg)


def test_check_rejects_unknown_top_level_key():
    msg = check_error({**base_cfg(), "paramters": {}})
    assert "paramters: not a W&B sweep key" in msg


def test_check_rejects_grid_point_that_is_not_a_valid_config():
    # Each value is fine alone; the point learning_rate=-1 leaves the trainable matrix group without an LR.
    cfg = base_cfg(matrix_lr={"value": -1.0}, unembedding_lr={"value": 1.0e-3},
                   learning_rate={"values": [-1.0, 0.1]}, num_tokens={"values": [1000, 2000]})
    msg = check_error(cfg)
    assert msg.startswith("grid point learning_rate=-1.0, num_tokens=1000: matrix_lr=-1.0")
    assert "must be > 0" in msg


def test_check_cli_reports_error_and_exit_code(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(dump_sweep_yaml({**base_cfg(), "method": "random"}))
    assert cli.main(["sweep", "check", str(path)]) == 2
    assert "method='random'" in capsys.readouterr().err
    path.write_text(dump_sweep_yaml(base_cfg()))
    assert main(["check", str(path)]) == 0
    assert "6 points" in capsys.readouterr().out


def test_load_sweep_missing_file(tmp_path):
    with pytest.raises(SweepError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------- expansion

def test_expand_grid_follows_wandb_order():
    # YAML order puts unembedding_lr first; W&B sorts names, so matrix_lr is the slow axis.
    cfg = base_cfg()
    cfg["parameters"] = {"unembedding_lr": cfg["parameters"]["unembedding_lr"], "num_iterations": {"value": 5},
                         "matrix_lr": cfg["parameters"]["matrix_lr"]}
    points = expand_grid(check_sweep(cfg))
    pairs = [(p["matrix_lr"], p["unembedding_lr"]) for p in points]
    assert pairs == [(1e-3, 1e-4), (1e-3, 1e-3), (1e-3, 1e-2), (1e-2, 1e-4), (1e-2, 1e-3), (1e-2, 1e-2)]
    assert pairs == list(itertools.product([1e-3, 1e-2], [1e-4, 1e-3, 1e-2]))
    assert all(p["num_iterations"] == 5 for p in points)


def test_expand_grid_count_and_full_configs():
    spec = check_sweep(base_cfg(matrix_lr={"values": axis_values(1e-4, 1.0, 7)},
                                unembedding_lr={"values": axis_values(1e-4, 1.0, 5)}))
    points = expand_grid(spec)
    assert len(points) == 35 == spec.n_points
    assert len({(p["matrix_lr"], p["unembedding_lr"]) for p in points}) == 35
    first, second, last = points[0], points[1], points[-1]  # W&B order: the last name varies fastest
    assert (first["matrix_lr"], first["unembedding_lr"]) == (1e-4, 1e-4)
    assert (second["matrix_lr"], second["unembedding_lr"]) == (1e-4, spec.axes[1][1][1])
    assert (last["matrix_lr"], last["unembedding_lr"]) == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------- shipped YAMLs

SWEEPS = sorted((paths.project_root() / "sweeps").glob("*.yaml"))


def test_shipped_sweeps_exist():
    names = {p.stem for p in SWEEPS}
    assert {"smoke", "matrix_unembedding_64", "matrix_unembedding_64_constant", "lr_tokens_32",
            "paper_tanh"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweep_passes_check_and_was_generated(path: Path):
    spec = load_sweep(path)
    assert "fractal-llm sweep new" in path.read_text()
    assert spec.name == path.stem
    for name, values in spec.axes:
        assert values[0] < values[-1]


def test_seed_study_sweeps_match_the_study():
    spec = load_sweep(paths.project_root() / "sweeps" / "matrix_unembedding_64.yaml")
    axes = dict(spec.axes)
    assert len(axes["matrix_lr"]) == 64 and axes["matrix_lr"][0] == 1e-6 and axes["matrix_lr"][-1] == 0.3
    assert len(axes["unembedding_lr"]) == 64 and axes["unembedding_lr"][-1] == 0.1
    assert spec.fixed["num_tokens"] == 250000 and spec.fixed["trainable_param_groups"] == "matrix,unembedding"
    constant = load_sweep(paths.project_root() / "sweeps" / "matrix_unembedding_64_constant.yaml")
    assert constant.fixed == {**spec.fixed, "lr_schedule": "constant"} and constant.axes == spec.axes
    tokens = dict(load_sweep(paths.project_root() / "sweeps" / "lr_tokens_32.yaml").axes)["num_tokens"]
    assert len(tokens) == 32 and all(type(v) is int for v in tokens)


def test_a_non_positive_value_on_an_lr_axis_is_refused_naming_the_sentinel():
    message = check_error(base_cfg(matrix_lr={"values": [-0.5, 1.0e-2]}))
    assert "parameters.matrix_lr.values[0]=-0.5" in message and "derived from learning_rate" in message
    check_sweep(base_cfg(matrix_lr={"value": -1.0}, learning_rate={"values": [1.0e-3, 1.0e-2]}))  # fixed: fine


def test_program_and_project_are_written_and_their_absence_is_a_warning(tmp_path, capsys):
    spec = check_sweep(base_cfg())
    assert any(w.startswith("program: missing") for w in spec.warnings)
    assert any(w.startswith("project: missing") for w in spec.warnings)
    out = tmp_path / "new.yaml"
    assert main(["new", "--axis", "matrix_lr=1e-3:1e-1:3", "--axis", "unembedding_lr=1e-3:1e-1:3", "-o", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    assert written["program"] == "fractal_llm/train.py" and written["project"] == "fractal-llm"
    assert main(["check", str(out)]) == 0 and "warning" not in capsys.readouterr().out
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(base_cfg()))
    assert main(["check", str(bare)]) == 0
    assert "warning: program: missing" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_sweep_names_program_and_project(path):
    assert load_sweep(path).warnings == []


# ---------------------------------------------------------------------------------------------- point lists

POINTS = [{"matrix_lr": 1.0e-2, "unembedding_lr": 1.0e-4}, {"matrix_lr": 1.0e-3, "unembedding_lr": 1.0e-4},
          {"matrix_lr": 1.0e-3, "unembedding_lr": 1.0e-2}]


def point_cfg(points=POINTS, **params) -> dict:
    return {"method": "grid", "command": list(MODULE_COMMAND),
            "parameters": {"grid_point": {"values": points}, "num_iterations": {"value": 5}, **params}}


def test_point_list_sweep_runs_exactly_its_points_in_file_order(tmp_path, capsys):
    spec = check_sweep(point_cfg())
    assert spec.points == POINTS and spec.n_points == 3 and spec.fixed == {"num_iterations": 5}
    # The axes: the points' keys, each with its sorted distinct values (the report's lattice).
    assert spec.axes == [("matrix_lr", [1e-3, 1e-2]), ("unembedding_lr", [1e-4, 1e-2])]
    assert expand_grid(spec) == [{"num_iterations": 5, **p} for p in POINTS]
    path = tmp_path / "points.yaml"
    path.write_text(dump_sweep_yaml(point_cfg()))
    assert main(["check", str(path)]) == 0
    assert "3 points (a list of grid_points)" in capsys.readouterr().out


@pytest.mark.parametrize("cfg, needle", [
    (point_cfg([{"matrix_lr": 1e-3}]), "exactly 2 train-config fields"),
    (point_cfg([POINTS[0], {"matrix_lr": 1e-3, "embedding_lr": 1e-3}]), "every point names the same two axes"),
    (point_cfg([POINTS[0], dict(POINTS[0])]), "grid_point.values[1]="),
    (point_cfg([{"matrix_lr": 1e-3, "lr_schedule": "cosine"}]), "lr_schedule: not a numeric field"),
    (point_cfg([{"matrix_lr": 1e-3, "unembeding_lr": 1e-3}]), "did you mean 'unembedding_lr'"),
    (point_cfg(seed={"values": [0, 1]}), "seed and grid_point both have `values`"),
    (point_cfg(matrix_lr={"value": 1e-3}), "matrix_lr: fixed, and also an axis"),
    (point_cfg({"matrix_lr": 1e-3, "unembedding_lr": 1e-4}), "must be a non-empty list of mappings"),
    (point_cfg([{"matrix_lr": "1e-3", "unembedding_lr": 1e-4}]), "YAML read '1e-3' as a string"),
])
def test_point_list_refusals_name_the_point(cfg, needle):
    assert needle in check_error(cfg)


def test_the_cli_agent_hands_a_point_to_the_train_entry_point_as_wandb_builds_it():
    """wandb's own argument builder (the CLI agent's `${args}`) writes a dict value as Python's str of it."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from fractal_llm.sweep import run_overrides
    run_params = {"grid_point": {"value": POINTS[2]}, "num_iterations": {"value": 5}}
    argv = create_sweep_command_args({"args": run_params})["args"]
    assert argv == ["--grid_point={'matrix_lr': 0.001, 'unembedding_lr': 0.01}", "--num_iterations=5"]
    assert run_overrides(argv) == {"num_iterations": 5, **POINTS[2]}
    assert run_overrides(['--grid_point={"matrix_lr": 0.001, "unembedding_lr": 0.01}']) == POINTS[2]  # JSON too
    from fractal_llm.config import ConfigError
    with pytest.raises(ConfigError, match=r"matrix_lr.: 0.001\W+: not a mapping; expected"):
        run_overrides(["--grid_point='matrix_lr': 0.001"])
    with pytest.raises(ConfigError, match="matrix_lr=0.001, but matrix_lr=0.5 is given on its own"):
        run_overrides(["--matrix_lr=0.5", "--grid_point={'matrix_lr': 0.001, 'unembedding_lr': 0.01}"])


def test_wandb_grid_engine_hands_out_exactly_the_listed_points(grid_engine):
    """W&B's grid engine (the `sweeps` package the server runs) on a point-list sweep: one run per point, in
    file order, each run's config holding the point as one dict; then nothing more."""
    cfg = {**point_cfg(), "metric": {"name": "score", "goal": "minimize"}}
    runs, handed = [], []
    for _ in range(len(POINTS) + 1):
        run = grid_engine.next_run(cfg, runs, validate=True)  # validate: W&B's JSON schema for sweep configs
        if run is None:
            break
        runs.append(run)
        handed.append(run.config)
    assert handed == [{"grid_point": {"value": p}, "num_iterations": {"value": 5}} for p in POINTS]
    spec = check_sweep(cfg)
    assert [{**spec.fixed, **c["grid_point"]["value"]} for c in handed] == expand_grid(spec)


def test_without_wandbs_grid_engine_its_tests_fail_and_say_how_to_install_it(tmp_path):
    """CI must run the grid-engine tests: without the dev extra they fail (they skipped silently before)."""
    shadow = tmp_path / "sweeps"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('hidden by this test')\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)]), "OMP_NUM_THREADS": "1"}
    test = "tests/test_sweep.py::test_wandb_grid_engine_hands_out_exactly_the_listed_points"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "skipped" not in out.stdout, out.stdout  # an error at set-up: not run
    assert "pip install -e .[dev]" in out.stdout
