"""The Datasets page's Export section: every format `workbench export` writes, as a download."""

from __future__ import annotations

import streamlit as st

import widgets
from workbench.data.downloads import export_bytes
from workbench.data.export import EXPORT_FORMATS
from workbench.inspect.pii import PERSONAL
from workbench.models.eval_items import split_values

FORMAT_HELP = {
    "chat": "JSONL, one {messages: [...]} per line (TRL, Axolotl, OpenAI fine-tuning)",
    "alpaca": "JSONL with instruction / input / output",
    "prompt-completion": "JSONL with prompt / completion",
    "csv": "every column, comma-separated",
    "parquet": "every column, typed (pandas, DuckDB, Spark)",
    "hf": "a Hugging Face datasets folder (load_from_disk), zipped",
    "preference": "JSONL with prompt / chosen / rejected (DPO)",
    "kto": "JSONL with prompt / completion / label (KTO)",
}


def export_section(store, version, user) -> None:
    with st.expander("Export", icon=":material/download:"):
        if not user.can("read_all"):
            st.info("Only an admin can export a whole dataset.", icon=":material/lock:")
            return
        c1, c2, c3 = st.columns([2, 1, 2])
        fmt = c1.selectbox("Format", EXPORT_FORMATS, key="ex_format", format_func=lambda f: f"{f}: {FORMAT_HELP[f]}",
                           help="The same formats as `workbench export`; each re-imports to the same records.")
        splits = split_values(store, version)
        split = c2.selectbox("Split", ["all", *(splits or [])], key="ex_split", disabled=not splits,
                             help="Export one split only (the version has a split column)" if splits else
                                  "This version has no split column; the Balance page makes splits.")
        redact = c3.multiselect("Replace personal data", PERSONAL, key="ex_redact",
                                help="These PII types become placeholders such as [EMAIL] in the exported text; "
                                     "the stored version is not changed.")
        if st.button("Prepare the file", key="ex_prepare", icon=":material/file_export:",
                     help="Write the export; a download button appears when it is ready."):
            with widgets.user_errors(), widgets.progress("exporting") as bar:
                st.session_state["ex_ready"] = (version.ref, *export_bytes(
                    store, version, fmt, split=None if split == "all" else split, redact=tuple(redact) or None,
                    progress=bar, user=user)[:3])
        ready = st.session_state.get("ex_ready")
        if ready and ready[0] == version.ref:  # a file prepared for another version is not offered here
            _, name, data, mime = ready
            st.download_button(f"Download {name} ({len(data) / 1e6:,.1f} MB)", data, file_name=name, mime=mime,
                               key="ex_download", icon=":material/download:", type="primary",
                               help="Save the file prepared above.")
