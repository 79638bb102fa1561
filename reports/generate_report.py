"""Build the trainability report of a sweep: W&B sweeps and/or local runner directories.

    python reports/generate_report.py ENTITY/PROJECT/SWEEP_ID [...] [--local DIR ...] [--out DIR]
        [--zoom K] [--zoom-res N] [--compare E/P/ID | --compare-local DIR] [--wandb]

The same as `fractal-llm report ...` (fractal_llm/cli.py: bad input is one `error:` line and exit 2); this
script only runs it from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractal_llm.cli import run_as_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_as_script("report"))
