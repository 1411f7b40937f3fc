"""The Export section of the Train page: a finished run as a merged transformers folder, a GGUF file, or a
GGUF file with an Ollama Modelfile (workbench.models.export_model does the work)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import wb_ui
import widgets
from workbench.data import downloads
from workbench.models import export_model, runs

FORMAT_HELP = {
    "merged": "merged: base + adapter in one plain transformers folder (transformers, vLLM)",
    "gguf": "gguf: one GGUF file for llama.cpp and LM Studio, tokenizer and chat template inside",
    "ollama": "ollama: the GGUF file plus a Modelfile for `ollama create`",
}
DTYPE_HELP = {
    "default": "default (the base model's own type for merged, f16 for GGUF)",
    "f32": "f32: exact, largest", "f16": "f16: half the size", "bf16": "bf16: half the size, f32's range",
    "q8_0": "q8_0: 8-bit GGUF, a quarter of f32 (GGUF only)",
}


def render_export(store, run_id: str) -> None:
    """Export the selected run; shown only once the run has an adapter."""
    with widgets.user_errors():
        if export_model.not_exportable(store, run_id):
            return
        with st.expander("Export the model", icon=":material/ios_share:"):
            _adapter_download(store, run_id)
            _export_form(store, run_id)


def offer_folder(folder: Path, name: str, label: str, key: str, help: str) -> None:
    """A download button for a folder as one zip, built when clicked; a folder too big for a browser copy is
    named by its path instead."""
    size = downloads.folder_size(folder)
    if size > downloads.BROWSER_LIMIT:
        st.caption(f"{label}: {size / 2**30:.1f} GB, too big for a browser download; copy it from `{folder}`.")
        return
    st.download_button(f"{label} ({max(size / 2**20, 0.1):.1f} MB)", data=lambda: downloads.zip_folder(folder),
                       file_name=f"{name}.zip", mime="application/zip", icon=":material/download:", key=key,
                       help=help, on_click="ignore")


def _adapter_download(store, run_id: str) -> None:
    adapter = Path(runs.run_status(runs.run_path(store, run_id))["adapter"])
    offer_folder(adapter, f"{run_id}-adapter", "Download the adapter", f"export_adapter_{run_id}",
                 "The LoRA adapter as a zip (adapter_config.json and the weights): load it on its base model with "
                 "peft's PeftModel.from_pretrained, or merge it below.")


def _export_form(store, run_id: str) -> None:
    left, right = st.columns(2)
    fmt = left.selectbox("Format", export_model.FORMATS, format_func=FORMAT_HELP.get, key=f"export_fmt_{run_id}",
                         help="Which serving tool the files are for; every export also gets a README saying how "
                              "to load it and which dataset version it came from.")
    dtypes = ["default"] + [d for d in export_model.DTYPES if fmt != "merged" or d != "q8_0"]
    dtype = right.selectbox("Weights type", dtypes, format_func=DTYPE_HELP.get, key=f"export_dtype_{run_id}",
                            help="f32, f16 and bf16 keep the weights to that precision; q8_0 is the common small "
                                 "GGUF type (8 bits per weight).")
    out = st.text_input("Folder", value=str(export_model.default_out(store, run_id, fmt)),
                        key=f"export_out_{run_id}_{fmt}",
                        help="The folder to write; it must not exist yet (or tick Replace for an earlier export).")
    force = st.checkbox("Replace an earlier export in this folder", key=f"export_force_{run_id}",
                        help="Only a folder that holds an earlier export is replaced; anything else is refused.")
    if not st.button("Export", icon=":material/download:", key=f"export_go_{run_id}",
                     help="Merge the adapter into the base model and write the files (a minute or more for a "
                          "large model)."):
        return
    with widgets.user_errors():
        plan = export_model.plan_export(store, run_id, fmt, out, dtype=None if dtype == "default" else dtype,
                                        force=force, user=wb_ui.current_user())
        with widgets.progress("merging the adapter") as report:
            payload = export_model.run_export(plan, progress=report)
        st.success(export_model.describe(payload).splitlines()[0])
        if payload.get("ollama_create"):
            st.caption("Then, where Ollama runs:")
            st.code(payload["ollama_create"], language="bash")
        st.caption("Files written:")
        st.code("\n".join(payload["files"]), language=None)
        offer_folder(Path(payload["path"]), Path(payload["path"]).name, "Download the export", f"export_dl_{run_id}",
                     "Everything written, as one zip.")
