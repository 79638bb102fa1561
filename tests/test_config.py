import pytest

from fractal_llm.config import (FAMILY_FIELDS, ConfigError, TrainConfig, check_field_value, field_names,
                                parse_cli_overrides, parse_groups, suggest_field)
from fractal_llm.sweep import AxisArg, SweepError, check_sweep, new_sweep


def test_defaults_resolve_learning_rates_by_the_seed_rule():
    config = TrainConfig(learning_rate=0.01)
    assert config.group_lrs() == {"matrix": 0.01, "embedding": pytest.approx(0.1), "unembedding": pytest.approx(0.002),
                                  "value_embedding": pytest.approx(0.05), "scalar": 0.5, "smear": 0.2}
    resolved = config.resolved()
    assert resolved.matrix_lr == 0.01 and resolved.unembedding_lr == pytest.approx(0.002)


def test_explicit_group_lr_wins():
    config = TrainConfig(matrix_lr=0.003, unembedding_lr=0.0005)
    assert config.group_lrs()["matrix"] == 0.003
    assert config.group_lrs()["unembedding"] == 0.0005
    assert config.group_lrs()["embedding"] == pytest.approx(0.03)


@pytest.mark.parametrize("text, groups", [
    ("matrix,unembedding", ("matrix", "unembedding")),
    ("all", ("matrix", "embedding", "unembedding", "value_embedding", "scalar", "smear")),
    ("ve, lambdas", ("value_embedding", "scalar")),
    ("none", ()),
    ("lm_head", ("unembedding",)),
    ("wte, matrix", ("matrix", "embedding")),
])
def test_group_names_and_aliases(text, groups):
    assert parse_groups(text) == groups


@pytest.mark.parametrize("kwargs, needle", [
    ({"trainable_param_groups": "matrix,bogus"}, "trainable_param_groups='matrix,bogus'"),
    ({"learning_rate": -1.0}, "matrix_lr=-1.0"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear'"),
    ({"warmup_frac": 1.0}, "warmup_frac=1.0"),
    ({"device_batch_size": 0}, "device_batch_size=0"),
    ({"num_tokens": 2.5}, "num_tokens=2.5"),
    ({"matrix_lr": "1e-4"}, "as a string"),
    ({"deterministic": "yes"}, "deterministic='yes'"),
    ({"num_iterations": -5}, "num_iterations=-5"),
])
def test_bad_values_name_the_field(kwargs, needle):
    with pytest.raises(ConfigError, match=None) as info:
        TrainConfig(**kwargs)
    assert needle in str(info.value)


def test_unknown_field_suggests_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'matrix_lr'"):
        TrainConfig.from_dict({"matrx_lr": 0.1})
    assert suggest_field("unembeding_lr") == "unembedding_lr"


def test_integral_float_for_int_field_is_accepted():
    assert check_field_value("num_tokens", 3e6) == 3_000_000


@pytest.mark.parametrize("values, needle", [
    ({"batch_size": 4}, "batch_size=4: a field of model_family 'mlp'; this config is model_family='gpt', which "
                        "does not read it (the gpt field is device_batch_size)"),
    ({"model_family": "mlp", "device_batch_size": 4}, "device_batch_size=4: a field of model_family 'gpt'"),
    ({"model_family": "mlp", "learning_rate": 0.1}, "(the mlp field is lr_input)"),
    ({"model_family": "mlp", "device": "cuda"}, "device='cuda': a field of model_family 'gpt'"),
])
def test_a_field_of_the_other_family_is_refused(values, needle):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert needle in str(info.value)
    # the same through --name=value arguments, as the train CLI and `wandb agent` pass them
    with pytest.raises(ConfigError, match=needle.split(":")[0]):
        TrainConfig.from_dict(parse_cli_overrides([f"--{k}={v}" for k, v in values.items()]))


def test_a_sweep_setting_the_other_familys_field_is_refused():
    axes = [AxisArg("matrix_lr", 1e-3, 1e-1, 2), AxisArg("unembedding_lr", 1e-3, 1e-1, 2)]
    with pytest.raises(SweepError, match="batch_size=8: a field of model_family 'mlp'"):
        check_sweep(new_sweep(axes, {"batch_size": 8}))
    mlp_axes = [AxisArg("lr_input", 0.1, 10.0, 2), AxisArg("lr_output", 0.1, 10.0, 2)]
    with pytest.raises(SweepError, match="device_batch_size=4: a field of model_family 'gpt'"):
        check_sweep(new_sweep(mlp_axes, {"model_family": "mlp", "device_batch_size": 4}))


def test_default_values_of_the_other_family_pass_and_every_field_has_a_family():
    # W&B's run config of a point holds every field at its default: not a refusal
    TrainConfig.from_dict(TrainConfig(model_family="mlp").to_dict())
    TrainConfig.from_dict(TrainConfig().to_dict())
    shared = {"model_family", "num_iterations", "seed", "trainable_window_steps", "trainable_loss_ratio_threshold"}
    gpt, mlp = set(FAMILY_FIELDS["gpt"]), set(FAMILY_FIELDS["mlp"])
    assert not gpt & mlp and gpt | mlp | shared == set(field_names())
