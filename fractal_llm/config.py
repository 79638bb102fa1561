"""TrainConfig: every knob of one grid point, validated before any model or data is touched.

Field names keep the seed study's names (docs/design.md) so its users' commands and sweep YAMLs carry over.
A bad value raises ConfigError naming the field, the value and what is allowed.
"""

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace

from fractal_llm.errors import FractalLLMError

GROUPS = ("matrix", "embedding", "unembedding", "value_embedding", "scalar", "smear")
GROUPS_2026_ONLY = ("value_embedding", "scalar", "smear")  # absent from Dec-2025 nanochat models
DEFAULT_MLP_STEPS = 500  # mlp family: steps when num_iterations is -1
# LR fields where a value <= 0 is the sentinel "derive me" (group_lrs): the resolved config holds the value used.
DERIVED_WHEN_NONPOSITIVE = ("matrix_lr", "embedding_lr", "unembedding_lr", "value_embedding_lr")

# Names users type for parameter groups -> our canonical group names.
GROUP_ALIASES = {
    "matrix": "matrix", "matrices": "matrix", "blocks": "matrix", "transformer": "matrix",
    "embedding": "embedding", "embeddings": "embedding", "embed": "embedding", "wte": "embedding",
    "unembedding": "unembedding", "unembed": "unembedding", "lm_head": "unembedding", "head": "unembedding",
    "value_embedding": "value_embedding", "value_embeddings": "value_embedding", "value_embeds": "value_embedding",
    "ve": "value_embedding",
    "scalar": "scalar", "scalars": "scalar", "lambdas": "scalar",
    "smear": "smear",
}

CHOICES = {
    "model_family": ("gpt", "mlp"),
    "lr_schedule": ("cosine", "constant"),
    "dtype": ("auto", "float32", "bfloat16", "float64"),
    "device": ("auto", "cpu", "cuda"),
    "compile": ("auto", "compiled", "eager"),
    "nonlinearity": ("tanh", "relu", "linear"),
    "init_offset_mode": ("init", "every_step"),
    "mlp_weights": ("torch", "notebook"),
}

# Allowed ranges: (low, high, low_inclusive, high_inclusive); None = unbounded.
RANGES = {
    "max_seq_len": (2, None, True, True),
    "device_batch_size": (1, None, True, True),
    "embedding_lr_mult": (0.0, None, False, True),
    "unembedding_lr_mult": (0.0, None, False, True),
    "weight_decay": (0.0, None, True, True),
    "init_lr_frac": (0.0, None, False, True),
    "warmup_frac": (0.0, 1.0, True, False),
    "final_lr_frac": (0.0, None, True, True),
    "num_tokens": (1, None, True, True),
    "trainable_window_steps": (1, None, True, True),
    "trainable_loss_ratio_threshold": (0.0, None, False, True),
    "width": (1, None, True, True),
    "lr_input": (0.0, None, True, True),
    "scalar_lr": (0.0, None, True, True),
    "smear_lr": (0.0, None, True, True),
}


# The fields one family reads and the other ignores. A config that sets a field of the other family is
# refused (a gpt sweep with `batch_size` would silently train with device_batch_size). Every other field
# (model_family, num_iterations, seed, the verdict window and threshold) is read by both.
FAMILY_FIELDS = {
    "gpt": ("model_id", "dataset_id", "dataset_revision", "dataset_split", "max_seq_len", "device_batch_size",
            "learning_rate", "matrix_lr", "embedding_lr", "unembedding_lr", "embedding_lr_mult",
            "unembedding_lr_mult", "value_embedding_lr", "scalar_lr", "smear_lr", "trainable_param_groups",
            "weight_decay", "init_lr_frac", "warmup_frac", "final_lr_frac", "lr_schedule", "num_tokens",
            "deterministic", "dtype", "device", "compile", "eval_every", "sample_every", "sample_before_after"),
    "mlp": ("nonlinearity", "width", "dataset_size", "batch_size", "lr_input", "lr_output", "init_offset",
            "init_offset_mode", "mlp_weights"),
}
COUNTERPARTS = {"batch_size": "device_batch_size", "device_batch_size": "batch_size",
                "learning_rate": "lr_input", "lr_input": "learning_rate"}


class ConfigError(FractalLLMError):
    """A config value that is not allowed; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    model_family: str = "gpt"  # "gpt": fine-tune a nanochat GPT; "mlp": Sohl-Dickstein 2024 paper network
    # --- gpt family
    model_id: str = "tiny"  # "tiny" | local dir | "wandb:entity/project/name:version" | "hf:owner/repo"
    dataset_id: str = "docqa"  # "docqa" (shipped) | local .json/.jsonl | Hugging Face dataset id
    dataset_revision: str = ""  # hub datasets: a branch, tag or commit; "" = the default branch, pinned to its commit
    dataset_split: str = "train"  # the split fine-tuning draws its batches from
    max_seq_len: int = 1024  # tokens per row; longer conversations are cropped (kept if an answer token remains)
    device_batch_size: int = 8  # conversations per step (one device, no gradient accumulation)
    learning_rate: float = 0.02  # matrix LR when matrix_lr <= 0
    matrix_lr: float = -1.0  # <= 0: derived from learning_rate
    embedding_lr: float = -1.0  # <= 0: matrix LR * embedding_lr_mult
    unembedding_lr: float = -1.0  # <= 0: matrix LR * unembedding_lr_mult
    embedding_lr_mult: float = 10.0  # embedding LR / matrix LR when embedding_lr <= 0
    unembedding_lr_mult: float = 0.2  # unembedding LR / matrix LR when unembedding_lr <= 0
    # --- gpt family, 2026 nanochat models only (docs/nanochat.md); defaults are nanochat's SFT values
    value_embedding_lr: float = -1.0  # <= 0: half the embedding LR (nanochat's ratio)
    scalar_lr: float = 0.5  # x0_lambdas; resid_lambdas train at scalar_lr / 100
    smear_lr: float = 0.2  # smear gate + lambda, backout lambda
    # --- gpt family
    trainable_param_groups: str = "matrix,unembedding"  # comma-separated groups that train; the rest stay frozen
    weight_decay: float = 0.1  # the AdamW groups (2026 models: NorMuon's cautious decay instead)
    init_lr_frac: float = 1.0  # every group's LR is scaled by this from the start (nanochat's SFT knob)
    warmup_frac: float = 0.06  # share of the steps with a linear warm-up
    final_lr_frac: float = 0.0  # cosine: the LR at the last step, as a share of the peak
    lr_schedule: str = "cosine"  # after warm-up: cosine decay to final_lr_frac, or constant
    num_tokens: int = 5000  # supervised (assistant) tokens; the default is a short run of the embedded default
    num_iterations: int = -1  # -1: derived from num_tokens (gpt) or 500 steps (mlp)
    seed: int = 0  # the data order (gpt) or the initial weights and data (mlp)
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU; CPU runs repeat bit for bit anyway)
    # "auto": bfloat16 autocast on CUDA, float32 elsewhere; "float64": weights, optimizer state and loss in
    # float64, trained eagerly (the precision-floor probe of `fractal-llm perturb`, docs/design.md)
    dtype: str = "auto"
    device: str = "auto"  # "auto": CUDA when present, else CPU
    # the training step: "compiled" (torch.compile, once per process, eager if compiling fails), "eager", or
    # "auto": compiled on CUDA, eager on CPU, where a point saves less than the compile costs (docs/design.md)
    compile: str = "auto"
    trainable_window_steps: int = 20  # K: the verdict compares the mean loss of the last K steps ...
    trainable_loss_ratio_threshold: float = 1.0  # ... with the first loss: trainable when their ratio is below this
    eval_every: int = -1  # validation loss every N steps; <= 0 off
    sample_every: int = -1  # generate samples every N steps; <= 0 off
    sample_before_after: bool = False  # generate a few answers before and after fine-tuning, into the record
    # --- mlp family (paper mode); steps = num_iterations
    nonlinearity: str = "tanh"  # the hidden layer's activation
    width: int = 16  # hidden units (the paper: 16)
    dataset_size: int = -1  # -1: number of parameters (tanh, relu) or width (linear)
    batch_size: int = -1  # -1: full batch; else minibatch size drawn with replacement
    lr_input: float = 0.1  # learning rate of the input layer (the paper's x axis)
    lr_output: float = 0.1  # -1: the same as lr_input (one LR for both layers, as in the paper's init-offset image)
    init_offset: float = 0.0  # added to the input weights (init_offset_mode says when)
    init_offset_mode: str = "init"  # "init": added to W0 once; "every_step": added after every update
    # "torch": W0, W1, X, Y drawn by torch from `seed`; "notebook": the paper notebook's JAX draws (width 16,
    # seed 0, 272/16/1 examples) and its minibatch index stream (docs/paper.md)
    mlp_weights: str = "torch"

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, check_field_value(f.name, getattr(self, f.name)))
        self._check_cross_fields()

    def _check_cross_fields(self) -> None:
        """Rules between fields, of the family in use only (an mlp point has no GPT learning rates)."""
        if self.num_iterations == 0 or self.num_iterations < -1:
            derived = "num_tokens" if self.model_family == "gpt" else f"{DEFAULT_MLP_STEPS} steps"
            raise ConfigError(f"num_iterations={self.num_iterations!r}: must be a positive step count or -1 "
                              f"(derived from {derived})")
        if self.model_family == "mlp":
            self._check_mlp_fields()
        else:
            self._check_gpt_fields()

    def _check_gpt_fields(self) -> None:
        groups = self.trainable_groups()  # raises on an unknown group name
        lrs = self.group_lrs()
        for group in groups:
            if not lrs[group] > 0:
                raise ConfigError(
                    f"{group}_lr={lrs[group]!r}: group {group!r} is trainable, so its learning rate must be > 0 "
                    f"(set {group}_lr, or learning_rate > 0 to derive it)")
        if self.dtype == "float64" and self.compile == "compiled":
            raise ConfigError("dtype='float64' with compile='compiled': a float64 run trains eagerly (the compiled "
                              "step is float32); use compile='auto' or 'eager'")
        if not self.model_id:
            raise ConfigError("model_id='': a model is required (\"tiny\", a local directory, wandb:..., hf:...)")
        if not self.dataset_id:
            raise ConfigError("dataset_id='': a dataset is required (\"docqa\", a local .jsonl, or a hub id)")

    def _check_mlp_fields(self) -> None:
        if self.dataset_size == 0 or self.dataset_size < -1:
            raise ConfigError(f"dataset_size={self.dataset_size!r}: must be a positive count or -1 (auto)")
        if self.batch_size == 0 or self.batch_size < -1:
            raise ConfigError(f"batch_size={self.batch_size!r}: must be a positive count or -1 (full batch)")
        if self.lr_output < 0 and self.lr_output != -1:
            raise ConfigError(f"lr_output={self.lr_output!r}: must be >= 0, or -1 for the same LR as lr_input")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config that `values` (a sweep point, --name=value arguments, a W&B run's config) sets: an
        unknown field, or a field of the other model family, is refused."""
        known = set(field_names())
        for name in values:
            if name not in known:
                raise ConfigError(unknown_field_message(name))
        check_family_fields(values)
        return cls(**values)

    def trainable_groups(self, available: tuple[str, ...] = GROUPS) -> tuple[str, ...]:
        """The trainable groups among those the model has (`available`): "all" means all of them; naming a
        group the model lacks (a 2026-only group on a Dec-2025 model) is an error."""
        groups = parse_groups(self.trainable_param_groups)
        if self.trainable_param_groups.strip().lower() == "all":
            return tuple(g for g in groups if g in available)
        absent = [g for g in groups if g not in available]
        if absent:
            raise ConfigError(f"trainable_param_groups={self.trainable_param_groups!r}: this model has no "
                              f"{', '.join(absent)} group; its groups are {', '.join(available)} "
                              f"({', '.join(GROUPS_2026_ONLY)} exist only in 2026 nanochat models)")
        return groups

    def matrix_lr_resolved(self) -> float:
        return self.matrix_lr if self.matrix_lr > 0 else self.learning_rate

    def group_lrs(self) -> dict[str, float]:
        """Learning rate of each GPT parameter group, with the seed study's derivation rule for LR <= 0
        (and nanochat's for the value embeddings: half the embedding LR)."""
        matrix = self.matrix_lr_resolved()
        embedding = self.embedding_lr if self.embedding_lr > 0 else matrix * self.embedding_lr_mult
        unembedding = self.unembedding_lr if self.unembedding_lr > 0 else matrix * self.unembedding_lr_mult
        value_embedding = self.value_embedding_lr if self.value_embedding_lr > 0 else 0.5 * embedding
        return {"matrix": matrix, "embedding": embedding, "unembedding": unembedding,
                "value_embedding": value_embedding, "scalar": self.scalar_lr, "smear": self.smear_lr}

    def lr_output_resolved(self) -> float:
        """mlp family: the output layer's LR (lr_output = -1 ties it to lr_input)."""
        return self.lr_input if self.lr_output == -1 else self.lr_output

    def resolved(self) -> "TrainConfig":
        """The config as used: derived learning rates written into their fields."""
        lrs = self.group_lrs()
        return replace(self, matrix_lr=lrs["matrix"], embedding_lr=lrs["embedding"],
                       unembedding_lr=lrs["unembedding"], value_embedding_lr=lrs["value_embedding"],
                       lr_output=self.lr_output_resolved())


def parse_groups(text: str) -> tuple[str, ...]:
    """'matrix,lm_head' -> ('matrix', 'unembedding'); also 'all' and 'none'."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return GROUPS
    if names == ["none"] or not names:
        return ()
    groups = set()
    for name in names:
        if name not in GROUP_ALIASES:
            allowed = ", ".join(["all", "none", *sorted(GROUP_ALIASES)])
            raise ConfigError(f"trainable_param_groups={text!r}: unknown group {name!r}; allowed: {allowed}")
        groups.add(GROUP_ALIASES[name])
    return tuple(g for g in GROUPS if g in groups)


def check_family_fields(values: dict) -> None:
    """Refuse a field that only the other model family reads, set to other than its default: it would be
    accepted and silently ignored. (A default value is no harm: W&B's run config holds every field.)"""
    family = values.get("model_family", TrainConfig.model_family)
    defaults = TrainConfig.__dataclass_fields__
    for other, names in FAMILY_FIELDS.items():
        if other == family or family not in FAMILY_FIELDS:
            continue
        for name in names:
            if name in values and values[name] != defaults[name].default:
                counterpart = COUNTERPARTS.get(name)
                hint = f" (the {family} field is {counterpart})" if counterpart in FAMILY_FIELDS[family] else ""
                raise ConfigError(f"{name}={values[name]!r}: a field of model_family {other!r}; this config is "
                                  f"model_family={family!r}, which does not read it{hint}. Remove it, or set "
                                  f"model_family: {other}")


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def field_types() -> dict[str, type]:
    defaults = TrainConfig.__dataclass_fields__
    return {name: type(defaults[name].default) for name in defaults}


def suggest_field(name: str) -> str | None:
    matches = difflib.get_close_matches(name, field_names(), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_field_message(name: str) -> str:
    hint = suggest_field(name)
    suffix = f"; did you mean {hint!r}?" if hint else "; see TrainConfig in fractal_llm/config.py for the fields"
    return f"{name}: not a train-config field{suffix}"


def check_field_value(name: str, value):
    """Check one field's type and range; return the value normalised (an integral float for an int field -> int)."""
    types = field_types()
    if name not in types:
        raise ConfigError(unknown_field_message(name))
    expected = types[name]
    value = _check_type(name, value, expected)
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"{name}={value!r}: allowed values are {', '.join(CHOICES[name])}")
    if name in RANGES:
        _check_range(name, value, *RANGES[name])
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}: must be a finite number")
    return value


def _check_type(name: str, value, expected: type):
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r}: must be true or false")
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r}: must be an integer{_string_hint(value)}")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name}={value!r}: must be an integer")
        return int(value)
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r}: must be a number{_string_hint(value)}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: must be a string")
    return value


def _string_hint(value) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return (f" (YAML read {value!r} as a string: write floats with a dot in the mantissa, "
                f"e.g. {format_float(float(value))})")
    return ""


def format_float(x: float) -> str:
    """The shortest exponent form that reads back exactly, with a '.' in the mantissa and a signed exponent:
    yaml.safe_load (YAML 1.1) reads `1e-4` as a string but `1.0e-04` as a float."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{x!r}: a sweep value must be finite")
    for digits in range(17):
        text = f"{x:.{digits}e}"
        if float(text) == x:
            break
    mantissa, exponent = text.split("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}"


def _check_range(name, value, low, high, low_inclusive, high_inclusive) -> None:
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lo = "" if low is None else f"{'>=' if low_inclusive else '>'} {low}"
        hi = "" if high is None else f"{'<=' if high_inclusive else '<'} {high}"
        allowed = " and ".join(part for part in (lo, hi) if part)
        raise ConfigError(f"{name}={value!r}: must be {allowed}")


def coerce_cli_value(name: str, text: str):
    """Turn the string of a `--name=value` argument into the field's type."""
    types = field_types()
    if name not in types:
        raise ConfigError(unknown_field_message(name))
    expected = types[name]
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r}: must be true or false")
    if expected in (int, float):
        try:
            number = float(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r}: must be {'an integer' if expected is int else 'a number'}") from None
        if expected is int:
            return int(number) if number.is_integer() else number  # check_field_value rejects the fraction
        return number
    return text


def parse_cli_overrides(argv: list[str]) -> dict:
    """Parse `--name=value` / `--name value` pairs (the form `wandb agent` passes with ${args})."""
    values: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"{arg}: expected --name=value")
        if "=" in arg:
            name, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ConfigError(f"{arg}: missing value (use --name=value)")
            name, text = arg[2:], argv[i + 1]
            i += 2
        name = name.replace("-", "_")
        values[name] = coerce_cli_value(name, text)
    return values
