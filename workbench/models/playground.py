"""The Playground: talk to a model beside the data, and send what you notice back to it.

A model is picked by a key: `base:NAME` (a base model: 'tiny', a folder, a cached Hugging Face id),
`run:RUN_ID` (a finished training run: its base and adapter) or `folder:PATH` (a local folder holding
a model, an adapter, or a run's `adapter/`); keys resolve through `eval_setup.resolve_model`, the way
`workbench eval` finds its model. Loaded models (`trainers.chat.ChatModel`) are kept per project,
hung off the store, a few at a time (the least recently used one goes first), so a conversation does
not load its model again for every message.

Back to the data: a corrected answer becomes a training record (the conversation, the corrected answer,
a category) appended to a new version of a chosen dataset, and an answer that needs another look
becomes a record of a new version, flagged for the Label queue (`workbench.labels.flags`). Each
version's recipe names the playground, the model and the answer it gave.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from workbench.core.auth import User, require_role
from workbench.core.canonical import chat_to_canonical
from workbench.core.errors import WorkbenchError
from workbench.core.formats import RowError
from workbench.core.store import Store
from workbench.core.versions import Version, get_version, iter_version, list_datasets, write_version
from workbench.models import eval_setup
from workbench.models.eval_setup import ModelSpec

MAX_LOADED = 3  # the page compares up to three models; a fourth load unloads the least recently used
STATE = "playground.models"
MAX_RECORD_BYTES = 1_000_000


@dataclass
class ChatSettings:
    """How the playground answers (one set for every model of a comparison)."""

    system: str = ""
    """The system message put first in every conversation (empty: none)."""
    max_new_tokens: int = 256
    """Longest answer in tokens; generation also stops at the model's end-of-turn token."""
    temperature: float = 0.0
    """0 answers greedily: the same prompt always gets the same answer, the one `workbench eval` gives.
    Above 0 samples; higher is more varied."""
    top_p: float = 1.0
    """Sampling only: draw from the smallest set of likeliest tokens whose probabilities add up to top-p."""
    seed: int | None = None
    """Sampling only: a seed makes a sampled answer repeatable (empty: a fresh draw every time)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or not 1 <= self.max_new_tokens <= 8192:
            raise WorkbenchError(f"max_new_tokens: {self.max_new_tokens!r}; expected a whole number from 1 to 8192")
        if not 0 <= float(self.temperature) <= 10:
            raise WorkbenchError(f"temperature: {self.temperature!r}; expected 0 (greedy) up to 10")
        if not 0 < float(self.top_p) <= 1:
            raise WorkbenchError(f"top_p: {self.top_p!r}; expected a number above 0 and at most 1")
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)
        self.system = (self.system or "").strip()

    def generation(self) -> dict:
        """The keyword arguments of ChatModel.stream / answer."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed}

    def to_dict(self) -> dict:
        return asdict(self)


def settings_help() -> dict[str, str]:
    """{setting: its help line}: the docstrings under ChatSettings' fields (the page's help= text)."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(ChatSettings)).body[0].body
    return {node.target.id: " ".join(str(nxt.value.value).split())
            for node, nxt in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}


# ---------------------------------------------------------------- which model

def model_choices(store: Store) -> list[dict]:
    """The models to pick from: the tiny base when it is built, and every finished training run (newest
    first). Each {key, label, kind}; a local folder is given as `folder:PATH`."""
    out = []
    if (store.project.models_dir / "tiny" / "config.json").exists():
        out.append({"key": "base:tiny", "label": "tiny (the base model)", "kind": "base"})
    for r in eval_setup.finished_training_runs(store):
        label = f"run {r['run_id']} · trained on {r['dataset']}@{r['version']} from {r.get('base_model') or '?'}"
        out.append({"key": f"run:{r['run_id']}", "label": label, "kind": "run"})
    return out


def resolve(store: Store, key: str) -> ModelSpec:
    """A model key (`base:NAME`, `run:RUN_ID`, `folder:PATH`) as the base model and adapter to load."""
    kind, _, value = (key or "").partition(":")
    value = value.strip()
    if kind == "base" and value:
        return eval_setup.resolve_model(store, base_model=value)
    if kind == "run" and value:
        return eval_setup.resolve_model(store, run_id=value)
    if kind == "folder" and value:
        return resolve_folder(store, value)
    raise WorkbenchError(f"model {key!r}: expected base:NAME (for example base:tiny), run:RUN_ID or folder:PATH")


def resolve_folder(store: Store, path: str) -> ModelSpec:
    """A local folder: a model (config.json), an adapter (adapter_config.json naming its base), or a folder
    with an `adapter/` inside (a run folder)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WorkbenchError(f"{folder} is not a folder; give a model folder or an adapter folder")
    if (folder / "adapter" / "adapter_config.json").exists():
        folder = folder / "adapter"
    if (folder / "adapter_config.json").exists():
        try:
            base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            base = None
        if not base:
            raise WorkbenchError(f"{folder}/adapter_config.json names no base model (base_model_name_or_path); "
                                 "pick the base model and give this folder as its adapter")
        spec = eval_setup.resolve_model(store, base_model=str(base), adapter=str(folder))
        return replace(spec, label=f"{Path(spec.base_model).name} + {folder.parent.name}/{folder.name}")
    if (folder / "config.json").exists():
        spec = eval_setup.resolve_model(store, base_model=str(folder))
        return replace(spec, label=folder.resolve().name)
    raise WorkbenchError(f"{folder} holds neither a model (config.json) nor an adapter (adapter_config.json)")


def model_label(spec: ModelSpec) -> str:
    return spec.label or (f"{spec.base_model} + {spec.adapter}" if spec.adapter else spec.base_model)


# ---------------------------------------------------------------- loaded models

class LoadedModels:
    """ChatModels kept loaded for one project (hung off its store), at most `limit` at a time."""

    def __init__(self, limit: int = MAX_LOADED):
        self.limit = limit
        self._models: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: ModelSpec) -> tuple:
        return (spec.base_model, spec.adapter)

    def get(self, spec: ModelSpec, *, device: str | None = None):
        """The loaded model for spec, loading it (and unloading the least recently used) when needed."""
        from trainers.chat import ChatModel
        from trainers.config import ConfigError

        key = self.key(spec)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            while len(self._models) >= self.limit:
                _, old = self._models.popitem(last=False)
                old.close()
            try:
                model = ChatModel.load(spec.base_model, spec.adapter, device=device)
            except ConfigError as exc:
                raise WorkbenchError(str(exc)) from None
            model.name = model_label(spec)
            self._models[key] = model
            return model

    def is_loaded(self, spec: ModelSpec) -> bool:
        return self.key(spec) in self._models

    def unload(self, spec: ModelSpec) -> bool:
        """Drop the model's weights; False when it was not loaded."""
        with self._lock:
            model = self._models.pop(self.key(spec), None)
        if model is None:
            return False
        model.close()
        return True

    def listing(self) -> list[dict]:
        """{name, base_model, adapter, memory_bytes} of every loaded model, oldest use first."""
        with self._lock:
            return [{"name": m.name, "base_model": m.base_model, "adapter": m.adapter,
                     "memory_bytes": m.memory_bytes()} for m in self._models.values()]


def loaded_models(store: Store) -> LoadedModels:
    return store.state(STATE, LoadedModels)


def memory_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


# ---------------------------------------------------------------- answering

def conversation(settings: ChatSettings, history: list[dict], question: str) -> list[dict]:
    """The messages a model answers: the system message, the turns so far, the new question."""
    question = (question or "").strip()
    if not question:
        raise WorkbenchError("the message is empty; write a question for the model")
    system = [{"role": "system", "content": settings.system}] if settings.system else []
    return system + [{"role": m["role"], "content": m["content"]} for m in history] + \
        [{"role": "user", "content": question}]


def stream(model, messages: list[dict], settings: ChatSettings) -> Iterator[str]:
    """The answer's text pieces as the model writes them; model.last has the totals afterwards."""
    from trainers.config import ConfigError

    try:
        yield from model.stream(messages, **settings.generation())
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None


def reply(store: Store, spec: ModelSpec, messages: list[dict], settings: ChatSettings) -> dict:
    """One whole answer: {answer, model, new_tokens, seconds} (`workbench chat --prompt`)."""
    model = loaded_models(store).get(spec)
    start = time.monotonic()
    for _ in stream(model, messages, settings):
        pass
    return {"answer": model.last["answer"], "model": model.name, "new_tokens": model.last["new_tokens"],
            "seconds": round(time.monotonic() - start, 3)}


def rendered_prompt(model, messages: list[dict]) -> str:
    """The prompt text the model reads, its chat template applied."""
    from trainers.config import ConfigError

    try:
        return model.render(messages)
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None


# ---------------------------------------------------------------- back to the data

def datasets(store: Store) -> list[str]:
    """Datasets a playground record can go to (not classification data: it has no answers to write)."""
    return [d["name"] for d in list_datasets(store) if d["format"] != "classification"]


def categories(store: Store, dataset: str) -> list[str]:
    """The category values of a dataset's newest version, most common first ([] when it has none)."""
    from workbench.data.browse import category_column
    from workbench.labels.questions import column_values

    version = get_version(store, dataset)
    column = category_column(store, version)
    return column_values(store, version, column) if column else []


def save_correction(store: Store, dataset: str, messages: list[dict], corrected: str, *, model: ModelSpec | str,
                    answer: str | None = None, category: str | None = None, settings: ChatSettings | None = None,
                    user: User | None = None) -> Version:
    """A new version of `dataset` (its newest version, or NAME@N) with one more record: the conversation
    (system message and turns up to the question) and the corrected answer, in `category`."""
    corrected = (corrected or "").strip()
    if not corrected:
        raise WorkbenchError("the corrected answer is empty; write the answer as it should be")
    recipe = {"op": "playground", "action": "correction", "model_answer": answer}
    return _append_record(store, dataset, messages, corrected, category=category, model=model, settings=settings,
                          recipe=recipe, user=user)[0]


def flag_answer(store: Store, dataset: str, messages: list[dict], answer: str, reason: str, *,
                model: ModelSpec | str, category: str | None = None, settings: ChatSettings | None = None,
                user: User | None = None) -> dict:
    """The conversation and the model's answer as a record of a new version of `dataset`, flagged for the
    Label queue with `reason`. Returns {version (ref), row}."""
    from workbench.labels import flags

    reason = (reason or "").strip()
    if not reason:
        raise WorkbenchError("say what is wrong with this answer (a reason is required)")
    if not (answer or "").strip():
        raise WorkbenchError("there is no answer to flag yet; ask the model first")
    version, row = _append_record(store, dataset, messages, answer.strip(), category=category, model=model,
                                  settings=settings, recipe={"op": "playground", "action": "flag", "reason": reason},
                                  user=user)
    label = model if isinstance(model, str) else model_label(model)
    flags.flag_records(store, version, [row], f"playground, {label}: {reason}", user)
    return {"version": version.ref, "row": row}


def _append_record(store: Store, dataset: str, messages: list[dict], completion: str, *, category: str | None,
                   model: ModelSpec | str, settings: ChatSettings | None, recipe: dict,
                   user: User | None) -> tuple[Version, int]:
    user = require_role(user, "write_version")
    base = get_version(store, dataset)
    if base.format == "classification":
        raise WorkbenchError(f"{base.ref} is classification data (text and label), it holds no answers; pick a "
                             "chat or prompt-completion dataset")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system" or
             (m.get("content") or "").strip()]
    try:
        canon = chat_to_canonical(turns + [{"role": "assistant", "content": completion}], MAX_RECORD_BYTES)
    except RowError as exc:
        raise WorkbenchError(f"this conversation cannot be a training record: {exc.reason}") from None
    category = (category or "").strip() or None
    spec = model if isinstance(model, ModelSpec) else None
    recipe = {**recipe, "from": base.ref, "row": base.row_count, "category": category,
              "model": model if isinstance(model, str) else model_label(model),
              "base_model": spec.base_model if spec else None, "adapter": spec.adapter if spec else None,
              "run_id": spec.run_id if spec else None, "settings": settings.to_dict() if settings else None}
    version = write_version(store, base.dataset, _with_record(store, base, {**canon, "category": category}),
                            kind="playground", fmt=base.format, recipe=recipe, info=base.info,
                            parent_id=base.version_id, created_by=user.name)
    return version, base.row_count


def _with_record(store: Store, base: Version, record: dict) -> Iterator[pa.Table]:
    """The base version's records, then the new one in the same columns (id and split filled in)."""
    schema, top_id = None, None
    for batch in iter_version(store, base):
        schema = batch.schema
        if "id" in schema.names and pa.types.is_integer(schema.field("id").type) and batch.num_rows:
            top = pc.max(batch["id"]).as_py()
            top_id = top if top_id is None or (top is not None and top > top_id) else top_id
        yield batch
    if schema is None:
        raise WorkbenchError(f"{base.ref} has no records to add to")
    row = {name: record.get(name) for name in schema.names}
    if "id" in schema.names:
        row["id"] = (top_id or 0) + 1 if pa.types.is_integer(schema.field("id").type) else \
            f"playground-{base.dataset}-{base.number}-{base.row_count}"
    if "split" in schema.names and record.get("split") is None:
        row["split"] = "train"
    fields = list(schema)
    for name, value in record.items():  # a column the version lacks (category, system, messages): added
        if value is not None and name not in schema.names:
            fields.append(pa.field(name, pa.string()))
            row[name] = value
    try:
        yield pa.Table.from_pylist([row], schema=pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise WorkbenchError(f"the new record does not fit the columns of {base.ref}: {exc}") from None
