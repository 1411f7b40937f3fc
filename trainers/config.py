"""The training configuration: one typed dataclass that checks itself (litgpt style).

Every field has a one-line docstring under it; `field_help()` reads those docstrings so the
CLI, the Train page and error messages all show the same help line. A YAML, JSON or TOML
file maps onto the same dataclass (`load_config`), and unknown or mistyped keys are refused
with the key named.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

METHODS = ("lora", "dora", "qlora", "prompt-tuning", "prefix-tuning", "dpo", "kto")
PREFERENCE_METHODS = ("dpo", "kto")
LOSS_VARIANTS = ("sigmoid", "ipo")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
FSDP_MODES = ("auto", "on", "off")
REPORT_TO = ("none", "mlflow", "tensorboard")


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the field, the value and what is expected."""


@dataclass
class TrainConfig:
    # ---- what to train
    base_model: str = "tiny"
    """Base model: 'tiny' (built from the data, offline), a local model folder, or a Hugging Face id in the local cache."""
    method: str = "lora"
    """Fine-tuning method: lora, dora, qlora (4-bit GPU), prompt-tuning, prefix-tuning; dpo or kto on preference data."""
    # ---- adapter
    lora_rank: int = 16
    """LoRA rank r: the width of the low-rank update; higher learns more and costs more memory."""
    lora_alpha: float = 32.0
    """LoRA alpha: the update is scaled by alpha / rank (twice the rank is a common choice)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training (0 to turn it off)."""
    target_modules: str = "all-linear"
    """Layers that get adapters: 'all-linear' or a comma-separated list of module names such as 'q_proj,v_proj'."""
    num_virtual_tokens: int = 20
    """Prompt and prefix tuning: how many trainable virtual tokens are prepended."""
    # ---- preference training (dpo, kto)
    beta: float = 0.1
    """dpo/kto: how far the model may move from the reference (the starting point); lower lets it move further."""
    loss_variant: str = "sigmoid"
    """dpo: the loss, sigmoid (the DPO paper) or ipo (squared, per-token averaged log-ratio margin)."""
    kto_desirable_weight: float = 1.0
    """kto: weight of the loss on desirable examples (raise it when they are fewer than undesirable ones)."""
    kto_undesirable_weight: float = 1.0
    """kto: weight of the loss on undesirable examples."""
    start_adapter: str = ""
    """dpo/kto: start from a finished run's adapter (its run id or adapter folder); empty: a fresh adapter on the base."""
    # ---- optimisation
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW."""
    lr_schedule: str = "cosine"
    """How the learning rate moves after warmup: cosine, linear (both decay to 0) or constant."""
    warmup_steps: int = 10
    """Optimizer steps over which the learning rate rises linearly from 0 to its peak."""
    weight_decay: float = 0.0
    """AdamW weight decay on the trainable weights."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm (0 turns clipping off)."""
    epochs: float = 1.0
    """Passes over the training split (may be fractional); ignored when max_steps is set."""
    max_steps: int = 0
    """Train for exactly this many optimizer steps, however many epochs that takes (0: run the epochs)."""
    batch_tokens: int = 0
    """Tokens in one micro-batch (packed rows x row length); 0: 2048 on a CPU, sized from the GPU's memory and model."""
    grad_accum: int = 1
    """Micro-batches summed into one optimizer step; the effective batch is batch_tokens x grad_accum."""
    max_seq_len: int = 0
    """Longest example in tokens, longer ones are cut (pre-flight shows how many); 0: 512 on a CPU, the data's need on a GPU."""
    packing: bool = True
    """Pack several examples into one row; each still attends only to itself (off for prompt/prefix tuning)."""
    seed: int = 42
    """Seed for the holdout, data order, adapter initialisation and dropout."""
    # ---- evaluation, checkpoints, stopping
    val_fraction: float = 0.1
    """Share of records held out for validation when the dataset has no split column."""
    max_val_records: int = 256
    """At most this many validation records are scored at each evaluation (keeps evaluations quick)."""
    eval_every: int = 25
    """Compute the validation loss every this many optimizer steps (and at the start and the end)."""
    early_stopping_patience: int = 0
    """Stop when the validation loss has not improved for this many evaluations (0: never stop early)."""
    early_stopping_min_delta: float = 0.0
    """An evaluation counts as an improvement only when it beats the best loss by more than this."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many optimizer steps."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep on disk."""
    # ---- hardware and outputs
    precision: str = "auto"
    """Number format: auto (bf16 on a GPU that supports it, float32 on CPU), fp32 or bf16."""
    cpu_threads: int = 0
    """CPU threads for torch when there is no GPU (0: all cores but one, leaving one for the app)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    fsdp: str = "auto"
    """Several GPUs: on shards the model across them (FSDP2), off puts a copy on each (DDP), auto: FSDP if it won't fit one."""
    merge: bool = False
    """Also save the base model with the adapter merged into it (a plain transformers model)."""
    record_losses: bool = True
    """After training, score each training record with the adapter (mean loss per answer token); not for dpo/kto."""
    report_to: str = "mlflow,tensorboard"
    """Where metrics also go (comma-separated): mlflow (the project's store), tensorboard, wandb, an MLflow URI, none."""
    # ---- the offline tiny base ('base_model: tiny')
    tiny_layers: int = 4
    """tiny base: transformer layers."""
    tiny_width: int = 128
    """tiny base: hidden size (the MLP is 4x wider)."""
    tiny_heads: int = 4
    """tiny base: attention heads (must divide the width)."""
    tiny_vocab: int = 2048
    """tiny base: BPE vocabulary size of the tokenizer trained on the data."""
    tiny_pretrain_steps: int = 200
    """tiny base: full-weight training steps on the project's own text before LoRA adapts it."""
    tiny_dir: str = ""
    """Folder where the tiny base is cached (the app sets <project>/models/tiny)."""

    def __post_init__(self) -> None:
        _check_types(self)
        if self.method not in METHODS:
            raise ConfigError(f"method: {self.method!r} is not known; expected one of {', '.join(METHODS)}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule: {self.lr_schedule!r} is not known; expected one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not known; expected one of {', '.join(PRECISIONS)}")
        if self.fsdp not in FSDP_MODES:
            raise ConfigError(f"fsdp: {self.fsdp!r} is not known; expected one of {', '.join(FSDP_MODES)}")
        from trainers.tracking import check_report_to  # none, mlflow, tensorboard, wandb or an MLflow URI

        check_report_to(self.report_to)
        for name in ("lora_rank", "num_virtual_tokens", "grad_accum", "eval_every",
                     "checkpoint_every", "keep_checkpoints", "tiny_layers", "tiny_width", "tiny_heads", "max_val_records"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be at least 1")
        for name in ("warmup_steps", "max_steps", "early_stopping_patience", "tiny_pretrain_steps", "cpu_threads",
                     "batch_tokens", "max_seq_len"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)} must be 0 or more")
        for name in ("lora_alpha", "learning_rate", "weight_decay", "max_grad_norm", "epochs",
                     "early_stopping_min_delta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}: {value} must be a finite number, 0 or more")
        if self.learning_rate == 0 or self.learning_rate > 1:
            raise ConfigError(f"learning_rate: {self.learning_rate} is outside (0, 1]; 2e-4 is a good start for LoRA")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout: {self.lora_dropout} must be in [0, 1)")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction: {self.val_fraction} must be between 0 and 1, for example 0.1")
        if self.epochs == 0 and self.max_steps == 0:
            raise ConfigError("epochs and max_steps are both 0; set one of them")
        if 0 < self.max_seq_len < 16:
            raise ConfigError(f"max_seq_len: {self.max_seq_len} is too short for a chat example; use 128 or more "
                              "(or 0 for what the data needs)")
        if self.batch_tokens and self.batch_tokens < self.max_seq_len:
            raise ConfigError(f"batch_tokens: {self.batch_tokens} is smaller than max_seq_len ({self.max_seq_len}); "
                              "a micro-batch must hold at least one full-length row")
        if self.tiny_width % self.tiny_heads:
            raise ConfigError(f"tiny_heads: {self.tiny_heads} does not divide tiny_width {self.tiny_width}")
        if self.tiny_vocab < 300:
            raise ConfigError(f"tiny_vocab: {self.tiny_vocab} is too small; a byte-level tokenizer needs 300 or more")
        if not self.base_model.strip():
            raise ConfigError("base_model is empty; use 'tiny', a local model folder or a Hugging Face id")
        if not self.target_modules.strip():
            raise ConfigError("target_modules is empty; use 'all-linear' or names such as 'q_proj,v_proj'")
        if self.loss_variant not in LOSS_VARIANTS:
            raise ConfigError(f"loss_variant: {self.loss_variant!r} is not known; expected one of "
                              f"{', '.join(LOSS_VARIANTS)}")
        for name in ("beta", "kto_desirable_weight", "kto_undesirable_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name}: {getattr(self, name)} must be a number above 0 (0.1 is a common beta)")
        if self.start_adapter.strip() and self.method not in PREFERENCE_METHODS:
            raise ConfigError(f"start_adapter is for methods dpo and kto; method {self.method} starts a fresh adapter")
        if self.method in ("prompt-tuning", "prefix-tuning", *PREFERENCE_METHODS):
            self.packing = False  # virtual tokens are prepended to each row: one example per row

    # ---- derived values

    @property
    def targets(self) -> str | list[str]:
        """target_modules as peft wants it: the 'all-linear' shorthand or a list of names."""
        if self.target_modules.strip().lower() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _check_types(cfg: TrainConfig) -> None:
    """Each value has its field's type (ints for floats are fine); the message names the field."""
    hints = get_type_hints(TrainConfig)
    for f in fields(cfg):
        value, want = getattr(cfg, f.name), hints[f.name]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, f.name, float(value))
        elif want is int and isinstance(value, float) and value.is_integer():
            setattr(cfg, f.name, int(value))
        elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise ConfigError(f"{f.name}: {value!r} is not {_TYPE_WORDS[want]}; {field_help().get(f.name, '')}")


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


@lru_cache(maxsize=1)
def field_help() -> dict[str, str]:
    """{field: its one-line docstring}, read from this module's source."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body
    out = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            out[node.target.id] = str(nxt.value.value).strip()
    return out


def from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """A TrainConfig from a mapping; unknown keys are refused with the closest known name."""
    known = {f.name for f in fields(TrainConfig)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    try:
        return TrainConfig(**values)
    except TypeError as exc:  # pragma: no cover - all keys are checked above
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a YAML, JSON or TOML file (a flat mapping of TrainConfig fields) and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            values = json.loads(text)
        elif suffix == ".toml":
            values = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .yaml, .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {suffix[1:].upper()} ({exc})") from None
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML; install it or use a .json/.toml file") from None
    except Exception as exc:  # yaml.YAMLError and friends
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value), got {type(values).__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(values, source=str(path))


def parse_assignment(text: str) -> tuple[str, Any]:
    """'key=value' from the command line; the value is read as JSON when it parses, else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, for example lora_rank=8")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")


def read_run_config(run_dir: str | Path) -> TrainConfig:
    return load_config(Path(run_dir) / "config.json")


__all__ = ["ConfigError", "TrainConfig", "field_help", "from_dict", "load_config", "parse_assignment",
           "save_config", "read_run_config", "METHODS", "PREFERENCE_METHODS", "SCHEDULES", "PRECISIONS"]
