"""The compiled training step (docs/design.md, "Compiled step"): the losses of eager training, one compile per
process, eager when compiling fails, static batch widths for CUDA, and a map never mixing the two."""

import numpy as np
import pytest
import torch

from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.gpt import finetune
from fractal_llm.records import RunRecord
from fractal_llm.report.grid import GridError, build_grid


def point(**changes) -> TrainConfig:
    values = dict(model_id="tiny", max_seq_len=192, device_batch_size=4, num_iterations=6,
                  trainable_window_steps=2, matrix_lr=0.02, unembedding_lr=0.05, device="cpu")
    return TrainConfig(**{**values, **changes})


def test_compiled_training_matches_eager_and_compiles_once_per_process(tiny_base):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    finetune.clear_caches()
    settings = [dict(matrix_lr=0.02, seed=0), dict(matrix_lr=0.3, unembedding_lr=0.5, seed=1)]
    eager = [finetune.train_gpt(point(compile="eager", **s)) for s in settings]
    first = finetune.train_gpt(point(compile="compiled", **settings[0]))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    second = finetune.train_gpt(point(compile="compiled", **settings[1]))  # other weights, LRs, batch widths
    assert counters["stats"]["unique_graphs"] == graphs, "the second point of the process recompiled"
    for e, c in zip(eager, (first, second)):
        assert (e.config["repro"]["training_step"], c.config["repro"]["training_step"]) == ("eager", "compiled")
        # The stated tolerance: compiled and eager fp32 steps differ at the level of rounding. Over these 6
        # steps of Muon and AdamW the losses differed by at most 1.5e-6 relative (2.2e-7 for the first
        # point; the second's large LRs amplify rounding); 1e-5 leaves room for other CPUs' kernels.
        np.testing.assert_allclose(c.history["train/loss"], e.history["train/loss"], rtol=1e-5)
        assert c.summary["verdict"] == e.summary["verdict"]


def test_without_a_cpp_compiler_training_falls_back_to_eager_with_one_line(tiny_base, monkeypatch, capsys,
                                                                           tmp_path):
    import torch._inductor.config as inductor_config
    # What inductor looks up on CPU (CXX, read into this setting when torch starts): a compiler that is not there.
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # no compiled kernel to reuse
    torch._dynamo.reset()
    finetune.clear_caches()
    result = finetune.train_gpt(point(compile="compiled", num_iterations=2))
    assert result.config["repro"]["training_step"] == "eager"
    assert result.summary["verdict"] in ("trainable", "not_trainable")
    lines = [line for line in capsys.readouterr().err.splitlines() if "training eagerly" in line]
    assert len(lines) == 1 and "C++ compiler" in lines[0], lines
    again = finetune.train_gpt(point(compile="compiled", num_iterations=2, seed=1))  # no second try, no line
    assert again.config["repro"]["training_step"] == "eager"
    assert "training eagerly" not in capsys.readouterr().err
    auto = finetune.train_gpt(point(num_iterations=2))  # README's CPU commands: compile="auto" is eager
    assert auto.config["repro"]["training_step"] == "eager"


def test_compile_field_is_checked_and_belongs_to_the_gpt_family():
    assert TrainConfig().compile == "auto"
    with pytest.raises(ConfigError, match=r"compile='yes': allowed values are auto, compiled, eager"):
        TrainConfig(compile="yes")
    with pytest.raises(ConfigError, match=r"compile='eager': a field of model_family 'gpt'"):
        TrainConfig.from_dict({"model_family": "mlp", "compile": "eager"})


def test_static_widths_pad_batches_without_changing_the_loss(tiny_base):
    from fractal_llm.gpt.base_model import get_base_model
    from fractal_llm.gpt.data import iterate_batches
    config = point()
    base = get_base_model(config.model_id, torch.device("cpu"))
    dataset = finetune.get_dataset(config, "train", base.tokenizer)
    pad_id = base.tokenizer.encode_special("<|assistant_end|>")
    widths = (48, 96, 144, 192)
    plain, padded = iterate_batches(dataset, 4, 0, pad_id), iterate_batches(dataset, 4, 0, pad_id, widths=widths)
    model = finetune.fresh_model(base)
    seen = set()
    for _ in range(6):
        a, b = next(plain), next(padded)
        width = a.inputs.shape[1]
        assert b.inputs.shape[1] == min(w for w in widths if w >= width)
        assert torch.equal(b.inputs[:, :width], a.inputs) and (b.targets[:, width:] == -1).all()
        assert b.n_supervised == a.n_supervised
        with torch.no_grad():
            torch.testing.assert_close(model(b.inputs, b.targets), model(a.inputs, a.targets), rtol=1e-5, atol=0)
        seen.add(b.inputs.shape[1])
    assert seen <= set(widths)


def test_a_map_refuses_compiled_and_eager_runs_together():
    def run(x, step):
        config = {"matrix_lr": x, "unembedding_lr": 0.1, "repro": {"base_model": "tiny:x", "training_step": step}}
        return RunRecord(name=str(x), config=config, summary={"verdict": "trainable", "score": -1.0,
                                                              "loss_last": 1.0},
                         history=None, created_at=0.0, path=f"runs/{x}")
    sweep = {"name": "unit", "method": "grid",
             "parameters": {"matrix_lr": {"values": [0.1, 0.2, 0.3]}, "unembedding_lr": {"values": [0.1, 0.2]}}}
    runs = [run(0.1, "compiled"), run(0.2, "eager"), run(0.3, "eager")]
    with pytest.raises(GridError, match=r"2 training steps \(compiled and eager\) in one map "
                                        r"\(repro.training_step\): compiled \(1 runs\), eager \(2 runs\)"):
        build_grid(sweep, runs)
    assert build_grid(sweep, runs, allow_mixed_base=True).counts["trainable"] == 3
    build_grid(sweep, [run(0.1, "compiled"), run(0.2, "compiled")])  # one kind: fine
