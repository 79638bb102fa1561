"""Build the trainability report of a sweep: W&B sweeps and/or local runner directories.

    python reports/generate_report.py ENTITY/PROJECT/SWEEP_ID [...] [--local DIR ...] [--out DIR]
        [--zoom K] [--zoom-res N] [--compare E/P/ID | --compare-local DIR] [--wandb]

The logic lives in fractal_llm.report (also behind `fractal-llm report ...`); this script only runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractal_llm.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
