"""Review: coming in a later release."""

import streamlit as st

st.title("Review")
st.info(
    "Coming soon: blind human review: reviewers rate or rank answers from different models without "
    "knowing which model wrote which, and flag bad training records.",
    icon=":material/construction:",
)
