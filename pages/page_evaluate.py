"""Evaluate: coming in a later release."""

import streamlit as st

st.title("Evaluate")
st.info(
    "Coming soon: generate answers on a test split and score them with BLEU and ROUGE, then compare "
    "runs side by side with significance tests.",
    icon=":material/construction:",
)
