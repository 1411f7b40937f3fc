"""The Streamlit entry file: `workbench serve` runs `streamlit run pages/app.py`."""

import streamlit as st

import wb_ui
from workbench.core.errors import WorkbenchError

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
# With accounts, a role sees only its pages (admins see all); the library checks roles again itself.
ROLE_PAGES = {"annotator": {"Label"}, "reviewer": {"Label", "Review"}}

try:
    wb_ui.get_store()
    user = wb_ui.signed_in_user()
except WorkbenchError as exc:  # e.g. a CLI import holds the database right now
    st.navigation(PAGES, position="hidden")
    wb_ui.show_error(exc)
    st.stop()
if user is None:  # the project has accounts and nobody is signed in here
    st.navigation(PAGES, position="hidden")
    wb_ui.login_form()
    st.stop()
if user.role != "admin":
    PAGES = {section: [p for p in pages if p.title in ROLE_PAGES.get(user.role, set())]
             for section, pages in PAGES.items()}
    PAGES = {section: pages for section, pages in PAGES.items() if pages}
page = st.navigation(PAGES)

with st.sidebar:
    st.caption("Project folder")
    st.code(wb_ui.current_project_dir(), language=None, wrap_lines=True)
    wb_ui.user_badge(user)

page.run()
