"""The Streamlit entry file: `workbench serve` runs `streamlit run pages/app.py`."""

import streamlit as st

import wb_ui
from workbench.errors import WorkbenchError

st.set_page_config(page_title="Workbench", layout="wide")

PAGES = {
    "Data": [
        st.Page("page_datasets.py", title="Datasets", icon=":material/table_view:", default=True),
        st.Page("page_inspect.py", title="Inspect", icon=":material/troubleshoot:"),
    ],
    "Labels": [
        st.Page("page_label.py", title="Label", icon=":material/label:"),
        st.Page("page_agreement.py", title="Agreement", icon=":material/handshake:"),
        st.Page("page_balance.py", title="Balance", icon=":material/balance:"),
    ],
    "Models": [
        st.Page("page_train.py", title="Train", icon=":material/model_training:"),
        st.Page("page_evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("page_review.py", title="Review", icon=":material/rate_review:"),
    ],
}
page = st.navigation(PAGES)

with st.sidebar:
    st.caption("Project folder")
    st.code(wb_ui.current_project_dir(), language=None, wrap_lines=True)

try:
    wb_ui.get_store()
except WorkbenchError as exc:  # e.g. a CLI import holds the database right now
    wb_ui.show_error(exc)
    st.stop()

page.run()
