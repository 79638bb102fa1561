"""`fractal-llm`: bad input of any command is one `error:` line and exit 2, caught once in fractal_llm/cli.py;
the report script and the modules run as scripts go through the same catch. Tried as a new user would."""

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import fractal_llm
from fractal_llm import cli
from fractal_llm.errors import FractalLLMError
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, new_sweep

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.fixture
def records(tmp_path):
    """A record directory of a finished 2x2 mlp sweep."""
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 0.5, 2.0, 2), AxisArg("lr_output", 0.5, 2.0, 2)],
                                               {"model_family": "mlp", "num_iterations": 5}, name="tiny")))
    assert cli.main(["local", str(sweep), "--out", str(tmp_path / "runs"), "--wandb", "disabled"]) == 0
    return tmp_path / "runs"


def test_the_report_script_with_a_missing_or_broken_lattice_says_so_in_one_line(tmp_path, records):
    out = run([str(ROOT / "reports" / "generate_report.py"), "--lattice", "missing.yaml", "--local", str(records),
               "--out", str(tmp_path / "report")], tmp_path)
    assert one_error_line(out) == "error: missing.yaml: no such sweep file"
    (tmp_path / "broken.yaml").write_text("method: grid\nparameters: [unclosed\n")
    out = run([str(ROOT / "reports" / "generate_report.py"), "--lattice", "broken.yaml", "--local", str(records),
               "--out", str(tmp_path / "report")], tmp_path)
    assert one_error_line(out).startswith("error: broken.yaml: not valid YAML: line 3, column 1: expected ','")


def test_a_module_run_as_a_script_goes_through_the_same_catch(tmp_path, records):
    out = run(["-m", "fractal_llm.runners.local", str(records / "sweep.yaml"), "--workers", "0"], tmp_path)
    assert one_error_line(out) == "error: --workers=0: must be >= 1"
    out = run(["-m", "fractal_llm.cli", "refine", "nowhere.yaml"], tmp_path)
    assert one_error_line(out) == "error: nowhere.yaml: no such sweep file"


def test_every_project_error_is_a_fractal_llm_error_and_still_a_value_error():
    # every module of the package, so a new error class cannot be missed; runtime failures are not bad input
    runtime_failures = {"WorkerError"}
    modules = [m.name for m in pkgutil.walk_packages(fractal_llm.__path__, "fractal_llm.")
               if not m.name.endswith("__main__")]
    errors = {name: cls for module in modules for name, cls in inspect.getmembers(
        importlib.import_module(module), inspect.isclass)
        if name.endswith("Error") and cls.__module__ == module and name not in runtime_failures}
    assert len(errors) >= 11, sorted(errors)
    for name, cls in errors.items():
        assert issubclass(cls, FractalLLMError) and issubclass(cls, ValueError), name  # old `except ValueError` still holds
