"""Build the trainability report of a sweep: the same command as `fractal-llm report` (see its --help).

    python reports/generate_report.py ENTITY/PROJECT/SWEEP_ID [...] [--local DIR ...] [--out DIR]

The logic lives in fractal_llm.report.report (the command) and fractal_llm.report.writer (the writer); bad input is one
`error:` line and exit 2 (fractal_llm/cli.py). This script only runs it from a checkout without installing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractal_llm.cli import run_as_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_as_script("report"))
