"""Agreement: coming in a later release."""

import streamlit as st

st.title("Agreement")
st.info(
    "Coming soon: inter-annotator agreement (Krippendorff's alpha, Fleiss' and Cohen's kappa, percent"
    " agreement) per question, with the disagreements listed for adjudication.",
    icon=":material/construction:",
)
