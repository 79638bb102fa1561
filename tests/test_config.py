import pytest

from fractal_llm.config import (ConfigError, TrainConfig, check_field_value, parse_cli_args, parse_groups,
                                suggest_field)


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


def test_cli_parsing_coerces_types():
    config = parse_cli_args(["--matrix_lr=1e-3", "--num_tokens", "3e4", "--deterministic=true",
                             "--lr_schedule=constant"])
    assert config.matrix_lr == 0.001 and config.num_tokens == 30000
    assert config.deterministic is True and config.lr_schedule == "constant"
    with pytest.raises(ConfigError, match="seed='abc'"):
        parse_cli_args(["--seed=abc"])
