"""dtype="float64": the precision-floor probe trains in float64 and leaves the process's model as it was."""

import pytest
import torch

from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.gpt import finetune


def point(**changes) -> TrainConfig:
    values = dict(model_id="tiny", dataset_id="docqa", max_seq_len=256, device_batch_size=4, num_iterations=3,
                  matrix_lr=0.02, unembedding_lr=0.004, trainable_param_groups="matrix,unembedding", compile="eager")
    return TrainConfig(**{**values, **changes})


def test_float64_trains_in_float64_then_float32_again(tiny_base):
    single = finetune.train_gpt(point())
    dtypes = []
    double = finetune.train_gpt(point(dtype="float64"), on_step=lambda step, row: dtypes.append(
        {p.dtype for p in finetune.get_base_model("tiny", torch.device("cpu")).model.parameters()}))
    assert dtypes and all(d == {torch.float64} for d in dtypes)
    again = finetune.train_gpt(point())
    model = finetune.get_base_model("tiny", torch.device("cpu")).model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert again.summary["loss_ratio"] == single.summary["loss_ratio"]  # float32 runs are unchanged, bit for bit
    a, b = single.history["train/loss"], double.history["train/loss"]
    assert a[0] == pytest.approx(b[0], rel=1e-5) and a != b  # same start; the rounding differs afterwards
    assert double.config["dtype"] == "float64"


def test_float64_is_never_compiled():
    with pytest.raises(ConfigError, match="float64.*compile='compiled'"):
        point(dtype="float64", compile="compiled")
