"""Train: coming in a later release."""

import streamlit as st

st.title("Train")
st.info(
    "Coming soon: LoRA fine-tuning on a dataset version: pick a base model and settings, start a run "
    "and follow its loss curves and checkpoints.",
    icon=":material/construction:",
)
