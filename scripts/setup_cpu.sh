#!/usr/bin/env bash
# CPU-only set-up (laptops, CI): a venv in .venv with the CPU build of torch, then the project.
# Installing torch first matters: an open `torch` requirement in an empty venv resolves to the
# multi-GB CUDA build. GPU hosts skip this script and run `pip install -e ".[dev]"` as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# TORCH_CPU_SPEC: the CPU wheel to take. Default: torch 2.13.0 (a CPU build on this project's machines);
# elsewhere set e.g. TORCH_CPU_SPEC="torch --index-url <PyTorch's CPU wheel index>" (see pytorch.org).
.venv/bin/python -m pip install -q ${TORCH_CPU_SPEC:-torch==2.13.0}
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
