# The image examples/k8s/agents-job.yaml runs: this repository, installed the way a GPU host installs it
# (README, "Install"; scripts/setup_cpu.sh does the same with the CPU build of torch):
#   docker build -t ghcr.io/YOUR-ORG/fractal-llm:latest .
# torch first, on its own layer: it is most of the image (the CUDA build from PyPI brings its CUDA libraries
# as wheels; the node's NVIDIA driver comes from the container runtime), and a code change then rebuilds
# only the project's layer. A CPU-only image: --build-arg TORCH_SPEC=torch==2.13.0 plus PyPI's CPU index
# (see scripts/setup_cpu.sh).
FROM python:3.11-slim

# git: each run records the code's commit (repro.git_commit); procps: `ps`, which `fractal-llm agents` reads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git procps \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1

ARG TORCH_SPEC=torch
RUN pip install ${TORCH_SPEC}

WORKDIR /opt/fractal-llm
COPY . .
# [hf]: hf:owner/repo model_ids; the sweeps/ folder and the shipped data stay beside the code (-e).
RUN pip install -e ".[hf]" && git config --system --add safe.directory /opt/fractal-llm

# Caches (base models, tokenized data, Hugging Face downloads): mount a volume here (the k8s example does).
ENV FRACTAL_LLM_HOME=/cache/fractal-llm HF_HOME=/cache/huggingface
CMD ["fractal-llm", "--help"]
