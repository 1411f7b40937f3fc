"""What an evaluation runs: the model (a base model folder, an optional adapter, the training run they
came from) and how it generates (`GenerationSettings`, saved with the run so it can be repeated)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store

FINISHED_TRAINING = ("completed", "stopped early", "cancelled")


@dataclass
class GenerationSettings:
    """How answers are generated; saved with the run so it can be repeated."""

    max_new_tokens: int = 0
    """Most tokens generated per answer; 0 sizes it from the references (their 99th percentile in tokens, a
    margin added, capped at 1024), so answers are not cut shorter than the answers they are scored against."""
    temperature: float = 0.0
    """0 is greedy decoding (the default, deterministic); above 0 samples with this temperature."""
    top_p: float = 1.0
    """Sampling only: keep the smallest set of tokens whose probability adds up to top_p."""
    batch_size: int = 0
    """Prompts generated together; 0 sizes the batch from the device (16 on a CPU); lower it when memory runs out."""
    seed: int = 0
    """Seed for sampling (greedy decoding does not use it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or not 0 <= self.max_new_tokens <= 8192:
            raise WorkbenchError(f"max_new_tokens: {self.max_new_tokens!r}; expected 0 (from the references) "
                                 "or a whole number up to 8192")
        if not 0 <= float(self.temperature) <= 10:
            raise WorkbenchError(f"temperature: {self.temperature!r}; expected 0 (greedy) up to 10")
        if not 0 < float(self.top_p) <= 1:
            raise WorkbenchError(f"top_p: {self.top_p!r}; expected a number above 0 and at most 1")
        if not isinstance(self.batch_size, int) or not 0 <= self.batch_size <= 4096:
            raise WorkbenchError(f"batch_size: {self.batch_size!r}; expected 0 (from the device) or up to 4096")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GenerationSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WorkbenchError(f"unknown generation setting(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
        return cls(**values)


AUTO_MARGIN, AUTO_FLOOR, AUTO_CAP = 8, 16, 1024


def answer_budget(store: Store, base_model: str, references: list[str]) -> tuple[int, str]:
    """max_new_tokens when it is 0: the references' 99th percentile in the model's own tokens (the approximate
    rule when its tokenizer cannot be loaded), plus a margin for the end-of-turn tokens, between 16 and 1024.
    Returns the number and the rule in words, saved with the run and shown beside the results."""
    import numpy as np

    from workbench.inspect import tokens

    try:
        counter = tokens.load_tokenizer(store, base_model)
    except WorkbenchError:
        counter = tokens.approximate()
    if counter.tokenizer is None:
        lengths = [tokens.approx_tokens(r) for r in references]
    else:
        lengths = [len(ids) for ids in counter.tokenizer(list(references), add_special_tokens=False)["input_ids"]]
    p99 = int(np.ceil(np.percentile(lengths, 99))) if lengths else 0
    n = min(AUTO_CAP, max(AUTO_FLOOR, p99 + AUTO_MARGIN))
    how = "approximate counts" if counter.tokenizer is None else "the model's tokenizer"
    rule = (f"{n} new tokens: the 99th percentile of the {len(lengths):,} reference answers is {p99} tokens "
            f"({how}), plus {AUTO_MARGIN}" + (f", capped at {AUTO_CAP}" if n == AUTO_CAP else "")
            + (f", at least {AUTO_FLOOR}" if n == AUTO_FLOOR else ""))
    return n, rule


@dataclass(frozen=True)
class ModelSpec:
    """The model an evaluation runs: a base model folder, an optional adapter, the run they came from."""

    base_model: str
    adapter: str | None = None
    run_id: str | None = None
    label: str = ""


def resolve_model(store: Store, *, run_id: str | None = None, base_model: str | None = None,
                  adapter: str | None = None) -> ModelSpec:
    """A model from a finished training run (its base and adapter), or a base model with an optional adapter.

    base_model: 'tiny' (the project's cached tiny base), a local folder, or a Hugging Face id in the cache.
    """
    if run_id:
        if base_model or adapter:
            raise WorkbenchError("give either --run or --base-model/--adapter, not both")
        return _model_of_run(store, run_id)
    if not base_model:
        raise WorkbenchError("say which model to evaluate: --run RUN_ID, or --base-model tiny|PATH|HF_ID "
                             "[--adapter DIR]")
    base = _resolve_base(store, base_model)
    adapter_path = None
    if adapter:
        adapter_path = Path(adapter).expanduser().resolve()
        if not (adapter_path / "adapter_config.json").exists():
            raise WorkbenchError(f"{adapter_path} is not an adapter folder (no adapter_config.json); "
                                 "pass the `adapter` folder of a finished training run")
        adapter_path = str(adapter_path)
    label = base_model if not adapter_path else f"{base_model} + {Path(adapter_path).parent.name}/adapter"
    return ModelSpec(base, adapter_path, None, label)


def _resolve_base(store: Store, base_model: str) -> str:
    if base_model == "tiny":
        folder = store.project.models_dir / "tiny"
        if not (folder / "config.json").exists():
            raise WorkbenchError(f"the tiny base is not built yet ({folder}); the first training run builds it: "
                                 "`workbench train --dataset NAME`")
        return str(folder)
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise WorkbenchError(f"{path} is not a model folder (no config.json)")
        return str(path.resolve())
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(base_model, "config.json")
    except ValueError:  # not even a well-formed model id (huggingface_hub's HFValidationError)
        cached = None
    if not isinstance(cached, str):  # the generator never downloads
        raise WorkbenchError(f"base model {base_model!r} is neither a model folder nor in the local Hugging Face "
                             f"cache; give a folder with config.json and weights, download it first (e.g. "
                             f"`hf download {base_model}`), or use 'tiny'")
    return base_model


def _model_of_run(store: Store, run_id: str) -> ModelSpec:
    """Base and adapter of a finished training run (workbench.models.runs: its status, manifest and adapter)."""
    from workbench.models import runs

    details = runs.run_details(store, run_id)
    adapter = details.get("adapter") or str(Path(details["run_dir"]) / "adapter")
    if details["status"] not in FINISHED_TRAINING or \
            not (Path(adapter) / "adapter_config.json").exists():
        raise WorkbenchError(f"run {run_id} has no finished adapter (status {details['status']!r}); evaluate a "
                             "completed run (see `workbench runs`), or wait for this one to finish")
    base = ((details.get("manifest") or {}).get("base_model") or {}).get("path")
    if not base:
        config = details.get("config") or {}
        name = config.get("base_model", "tiny")
        if name == "tiny":
            base = config.get("tiny_dir") or _resolve_base(store, "tiny")
        else:
            base = _resolve_base(store, name)
    return ModelSpec(str(base), str(adapter), str(run_id), f"run {run_id}")


def finished_training_runs(store: Store) -> list[dict]:
    """Training runs with an adapter to evaluate (workbench.models.runs), newest first."""
    from workbench.models import runs

    return [r for r in runs.list_runs(store) if r.get("status") in FINISHED_TRAINING and r.get("adapter")]
