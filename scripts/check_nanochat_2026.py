"""Check the 2026 loader against nanochat's own code: a checkpoint written by nanochat loads through our
load_model and gives nanochat's logits, greedy tokens and one optimizer step.

    git clone https://github.com/karpathy/nanochat /tmp/nanochat && git -C /tmp/nanochat checkout 92d63d4
    PYTHONPATH=. python scripts/check_nanochat_2026.py /tmp/nanochat

nanochat's code runs in a child process (its package is also called `nanochat`), on CPU in fp32
(NANOCHAT_DTYPE=float32), with TORCHDYNAMO_DISABLE=1 so its torch.compile'd optimizer kernels run eagerly
(same math, no C++ compile on a small CPU machine). Nothing else of nanochat is stubbed. The child also
tries nanochat's own loader on a Dec-2025 checkpoint written by us, to show what it does with one.
Not part of the test suite (it needs a nanochat checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

# Runs inside the nanochat checkout: writes the checkpoint (model, meta, tokenizer) and reference outputs.
CHILD = r'''
import json, sys, torch
from dataclasses import asdict
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import RustBPETokenizer
from nanochat.checkpoint_manager import save_checkpoint, build_model

out, dec_dir = sys.argv[1], sys.argv[2]
text = ["The short windows see a quarter of the context; the long ones see all of it. " * 3,
        "Value embeddings, a smear gate and a backout lambda: nanochat in 2026, 12345 and 678."] * 40
tok = RustBPETokenizer.train_from_iterator(iter(text), 400)
tok.save(out + "/tokenizer")
cfg = GPTConfig(sequence_len=512, vocab_size=tok.get_vocab_size(), n_layer=4, n_head=4, n_kv_head=2,
                n_embd=64, window_pattern="SSSL")  # short window 128 < the 300-token probe
torch.manual_seed(0)
with torch.device("meta"):
    model = GPT(cfg)
model.to_empty(device="cpu")
model.init_weights()
with torch.no_grad():  # every weight matters (zero-init projections included)
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.05)
save_checkpoint(out + "/base_checkpoints/d4", 7, model.state_dict(), None,
                {"step": 7, "model_config": asdict(cfg), "user_config": {"window_pattern": "SSSL"}})
g = torch.Generator().manual_seed(1)
idx = torch.randint(0, cfg.vocab_size, (2, 300), generator=g)
model.eval()
with torch.no_grad():
    logits = model(idx)
tokens = list(model.generate(idx[0, :150].tolist(), max_tokens=20, temperature=0.0))  # full-prefix decoding
# one optimizer step with nanochat's MuonAdamW, SFT learning rates
model.train()
opt = model.setup_optimizer(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.1, scalar_lr=0.5)
targets = torch.randint(0, cfg.vocab_size, (2, 300), generator=g)
model(idx, targets).backward()
opt.step()
torch.save({"idx": idx, "logits": logits, "tokens": tokens, "targets": targets,
            "after_step": {k: v.detach().clone() for k, v in model.state_dict().items()}}, out + "/reference.pt")
try:
    build_model(dec_dir, 0, torch.device("cpu"), "eval")
    dec = "loaded"
except Exception as exc:
    dec = f"{type(exc).__name__}: " + " ".join(line.strip() for line in str(exc).splitlines()[:2])[:300]
json.dump({"dec2025_in_nanochat": dec}, open(out + "/child.json", "w"))
'''


def write_dec2025_checkpoint(directory: Path) -> None:
    from nanochat.checkpoint import save_model
    from nanochat.gpt import GPT, GPTConfig
    from nanochat.tokenizer import Tokenizer
    tok = Tokenizer.train_from_iterator(["a Dec-2025 model, checkpoint for nanochat's 2026 loader"] * 20, 300)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=300, n_layer=2, n_head=2, n_kv_head=2, n_embd=64))
    model.init_weights()
    save_model(directory, model, tok, step=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanochat", type=Path, help="a nanochat checkout at commit 92d63d4")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    console = Console()
    out = args.out or Path(tempfile.mkdtemp(prefix="nanochat2026-"))
    out.mkdir(parents=True, exist_ok=True)
    write_dec2025_checkpoint(out / "dec2025")
    commit = subprocess.run(["git", "-C", str(args.nanochat), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    env = dict(os.environ, PYTHONPATH=str(args.nanochat.resolve()), NANOCHAT_DTYPE="float32",
               TORCHDYNAMO_DISABLE="1", NANOCHAT_BASE_DIR=str(out / "nanochat_base"))
    subprocess.run([sys.executable, "-c", CHILD, str(out), str(out / "dec2025" / "checkpoints")],
                   cwd=args.nanochat, env=env, check=True)

    from nanochat.checkpoint import load_model
    model, _, meta = load_model(out / "base_checkpoints" / "d4")
    ref = torch.load(out / "reference.pt", weights_only=False)
    with torch.no_grad():
        logits = model(ref["idx"])
    tokens = list(model.generate(ref["idx"][0, :150].tolist(), max_tokens=20, temperature=0.0))  # KV cache
    model.train()
    optimizers = model.setup_optimizers(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, weight_decay=0.1,
                                        scalar_lr=0.5, smear_lr=0.2)
    model(ref["idx"], ref["targets"]).backward()
    for opt in optimizers:
        opt.step()
    step_diff = max((v - ref["after_step"][k]).abs().max().item() for k, v in model.state_dict().items())
    child = json.loads((out / "child.json").read_text())

    table = Table(title=f"our load_model vs nanochat {commit} (CPU, fp32)")
    table.add_column("check")
    table.add_column("result")
    table.add_row("era chosen from meta", meta["loaded_from"]["era"])
    logits_diff = (logits - ref["logits"]).abs().max().item()
    table.add_row("logits max |diff| (2 x 300 tokens, windows 128/512)", f"{logits_diff:.2e}")
    table.add_row("greedy tokens, ours (KV cache) == nanochat (full prefix)", str(tokens == ref["tokens"]))
    table.add_row("params after one optimizer step, max |diff|", f"{step_diff:.2e}")
    table.add_row("nanochat's loader on a Dec-2025 checkpoint", child["dec2025_in_nanochat"])
    console.print(table)
    ok = torch.allclose(logits, ref["logits"], atol=1e-4, rtol=0) and tokens == ref["tokens"] and step_diff < 1e-4
    console.print("[green]match[/green]" if ok else "[red]MISMATCH[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
