"""Balance: coming in a later release."""

import streamlit as st

st.title("Balance")
st.info(
    "Coming soon: the category mix of a dataset and how to change it (downsample, upsample or both to"
    " a target mix), and leakage-free train/validation/test splits that keep near-duplicates "
    "together.",
    icon=":material/construction:",
)
