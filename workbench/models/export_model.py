"""`workbench export-model`: a finished training run as files that serving tools load.

merged  base + adapter merged into a plain transformers folder (transformers, vLLM, TGI load it as is)
gguf    one GGUF file (llama.cpp, LM Studio, Ollama), tokenizer and chat template inside
ollama  the GGUF file plus a Modelfile (template, stop tokens, defaults) for `ollama create`

Every export is one folder with a README.md (what it is, the run and the dataset version it came from, how to
load it) and export.json; it is written aside and renamed into place, so a failed export leaves nothing
behind, and an existing folder is replaced only with force=True and only when it is an earlier export.
The torch work is in trainers.export; this module resolves the run (workbench.models.runs, eval_setup).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core import files
from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store

FORMATS = ("merged", "gguf", "ollama")
DTYPES = ("f32", "f16", "bf16", "q8_0")
MANIFEST = "export.json"


@dataclass
class ExportPlan:
    """What an export will do, resolved from the project (the database is not needed after this)."""
    run: str
    format: str
    out: Path
    dtype: str | None
    force: bool
    base_model: str
    adapter: str
    dataset: dict = field(default_factory=dict)
    method: str | None = None


def not_exportable(store: Store, run_id: str) -> str | None:
    """Why this run cannot be exported now (None: it can), for a page to say before offering the export."""
    from workbench.models import eval_setup, runs

    status = runs.run_status(runs.run_path(store, run_id))
    if status["status"] not in eval_setup.FINISHED_TRAINING or not status.get("adapter"):
        return f"run {run_id} has no finished adapter yet (status {status['status']})"
    return None


def default_out(store: Store, run_id: str, fmt: str) -> Path:
    """Where an export goes unless the user says otherwise: exports/ in the project folder."""
    return store.project.root / "exports" / f"{run_id}-{fmt}"


def plan_export(store: Store, run_id: str, fmt: str, out, *, dtype: str | None = None, force: bool = False,
                user=None) -> ExportPlan:
    """Check the request and find the run's base model, adapter and dataset version."""
    from workbench.models import eval_setup, runs

    require_role(user, "train")
    if fmt not in FORMATS:
        raise WorkbenchError(f"format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise WorkbenchError(f"dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if fmt == "merged" and dtype == "q8_0":
        raise WorkbenchError("q8_0 is a GGUF type; a merged folder takes --dtype f32, f16 or bf16")
    target = Path(out).expanduser().resolve()
    check_target(target, force)
    spec = eval_setup.resolve_model(store, run_id=run_id)  # refuses a run without a finished adapter
    details = runs.run_details(store, run_id)
    manifest = details.get("manifest") or {}
    if manifest.get("method") in ("prompt-tuning", "prefix-tuning"):
        raise WorkbenchError(f"run {run_id} trained a {manifest['method']} adapter, which cannot be merged into the "
                             "weights; export a LoRA or DoRA run")
    dataset = dict(manifest.get("dataset") or {})
    dataset = {k: dataset.get(k) or details.get(k) for k in ("dataset", "version", "version_id", "content_hash")}
    return ExportPlan(run_id, fmt, target, dtype, force, spec.base_model, spec.adapter, dataset,
                      manifest.get("method") or (details.get("config") or {}).get("method"))


def check_target(target: Path, force: bool) -> None:
    """An existing target is replaced only with force, and only when it is an earlier export."""
    if not target.exists():
        return
    if not force:
        raise WorkbenchError(f"{target} already exists; pick another --out, or pass --force to replace it")
    if not (target.is_dir() and (target / MANIFEST).exists()):
        raise WorkbenchError(f"{target} exists and is not an earlier export (no {MANIFEST}); --force replaces only "
                             "an export folder; pick another --out")


def run_export(plan: ExportPlan, progress: Callable[[float, str], None] | None = None) -> dict:
    """Write the export (aside, then renamed into place); returns the JSON the CLI prints."""
    from trainers import export
    from trainers.config import ConfigError

    start = time.monotonic()
    check_target(plan.out, plan.force)
    say = progress or (lambda fraction, message: None)
    extra: dict = {}
    try:
        with files.atomic_path(plan.out) as tmp:
            tmp.mkdir(parents=True)
            model = export.merged_model(plan.base_model, plan.adapter, say)
            tokenizer = export.load_tokenizer(plan.base_model)
            if plan.format == "merged":
                dtype = plan.dtype or export.saved_dtype(plan.base_model)
                say(0.5, f"writing the merged folder ({dtype})")
                export.write_merged(model, tokenizer, tmp, dtype)
            else:
                dtype = plan.dtype or "f16"
                extra = _write_gguf_files(plan, model, tokenizer, tmp, dtype, say)
            _write_readme(plan, tmp, extra)
            written = sorted(p for p in tmp.rglob("*") if p.is_file())
            payload = {"format": plan.format, "path": str(plan.out), "run": plan.run,
                       "dtype": dtype,
                       "files": [str(p.relative_to(tmp)) for p in written] + [MANIFEST],
                       "base_model": plan.base_model, "adapter": plan.adapter, **plan.dataset, **extra}
            payload["bytes"] = sum(p.stat().st_size for p in written)
            payload["seconds"] = round(time.monotonic() - start, 2)
            files.write_json(tmp / MANIFEST, payload)
            payload["bytes"] += (tmp / MANIFEST).stat().st_size
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None
    say(1.0, f"exported to {plan.out}")
    return payload


def _write_gguf_files(plan: ExportPlan, model, tokenizer, folder: Path, dtype: str, say) -> dict:
    from trainers import export

    name = f"{model_name(plan)}-{dtype}.gguf"
    info = export.write_gguf(model, tokenizer, folder / name, dtype=dtype, name=model_name(plan), progress=say)
    extra = {"gguf": name, "architecture": info["architecture"], "tokenizer": info["tokenizer"]}
    if plan.format == "ollama":
        text, templated = export.modelfile(name, tokenizer, model.generation_config,
                                           context=model.config.max_position_embeddings)
        (folder / "Modelfile").write_text(text, encoding="utf-8")
        extra["ollama_create"] = f"ollama create {model_name(plan)} -f {plan.out / 'Modelfile'}"
        extra["template"] = "Modelfile" if templated else "gguf"
    return extra


def model_name(plan: ExportPlan) -> str:
    """A name Ollama and file systems accept: lower case letters, digits, dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"wb-{plan.run}".lower()).strip("-")[:80]


def _write_readme(plan: ExportPlan, folder: Path, extra: dict) -> None:
    ds = plan.dataset
    lines = [f"# {model_name(plan)}", "",
             f"Exported by Workbench from training run `{plan.run}` ({plan.method or 'adapter'} on `{plan.base_model}`),",
             f"trained on dataset `{ds.get('dataset')}` version {ds.get('version')} "
             f"(content hash `{ds.get('content_hash')}`).", ""]
    here = plan.out
    if plan.format == "merged":
        lines += ["The adapter is merged into the base weights: a plain transformers model folder.", "",
                  "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  f"model = AutoModelForCausalLM.from_pretrained({str(here)!r})",
                  f"tokenizer = AutoTokenizer.from_pretrained({str(here)!r})", "```", "",
                  f"vLLM: `vllm serve {here}`", "",
                  "llama.cpp: convert it with `python convert_hf_to_gguf.py "
                  f"{here}` (or export again with `--format gguf`).", ""]
    else:
        gguf = here / extra["gguf"]
        lines += [f"`{extra['gguf']}`: one GGUF file ({extra['architecture']} architecture, tokenizer and chat "
                  "template inside).", "",
                  f"llama.cpp: `llama-cli -m {gguf} -cnv` or `llama-server -m {gguf}`", "",
                  "transformers:", "", "```python", "from transformers import AutoModelForCausalLM",
                  f"model = AutoModelForCausalLM.from_pretrained({str(here)!r}, gguf_file={extra['gguf']!r})",
                  "```", "", f"vLLM: `vllm serve {gguf} --tokenizer {plan.base_model}`", ""]
        if plan.format == "ollama":
            held = "the chat template, stop tokens and defaults" if extra.get("template") == "Modelfile" else \
                "stop tokens and defaults; Ollama takes the chat template from the GGUF file"
            lines += [f"Ollama (the Modelfile holds {held}):", "",
                      f"    {extra['ollama_create']}", f"    ollama run {model_name(plan)}", ""]
        else:
            lines += [f"Ollama: a Modelfile with `FROM {gguf}` (or export with `--format ollama`).", ""]
    (folder / "README.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


def describe(payload: dict) -> str:
    """The CLI's text for a finished export."""
    size = payload["bytes"] / 1e6
    text = (f"exported run {payload['run']} as {payload['format']} ({payload['dtype']}) to {payload['path']}: "
            f"{len(payload['files'])} files, {size:,.1f} MB, {payload['seconds']:.1f} s")
    if payload.get("ollama_create"):
        text += f"\nthen run: {payload['ollama_create']}"
    return text
