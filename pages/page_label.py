"""Label: coming in a later release."""

import streamlit as st

st.title("Label")
st.info(
    "Coming soon: multi-annotator labelling with work queues: several annotators label the same "
    "records, every answer is kept, and each person sees what is still theirs to do.",
    icon=":material/construction:",
)
