"""Inspect: coming in a later release."""

import streamlit as st

st.title("Inspect")
st.info(
    "Coming soon: token-aware statistics for each dataset version (token lengths per base model), "
    "exact and near duplicates, PII detection, quality flags and train/test leakage checks.",
    icon=":material/construction:",
)
