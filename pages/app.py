"""The Streamlit entry file: `workbench serve` runs `streamlit run pages/app.py`.

`streamlit run` first imports this file as a module to find `app` (an st.App: Streamlit's own server
plus the route that sets the session cookie HttpOnly and a Host check on every request, see
wb_server), then runs it as the script of every page view, where __name__ is "__main__"."""

import streamlit as st
import wb_server

# With accounts, a role sees only its pages (admins see all); the library checks roles again itself.
ROLE_PAGES = {"annotator": {"Label"}, "reviewer": {"Label", "Review"}}


def all_pages() -> dict:
    return {
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
            st.Page("page_playground.py", title="Playground", icon=":material/forum:"),
        ],
        "Project": [
            st.Page("page_accounts.py", title="Accounts", icon=":material/group:"),
        ],
    }


def busy_page(exc: Exception) -> None:
    """While another process holds the project's database: say so, and open the app as soon as it is free."""
    import wb_ui
    from workbench.core.errors import StoreBusy

    st.warning("A Workbench command running in a terminal (an import, a training run's setup, an evaluation's "
               "scoring, ...) has this project's database open right now. This page opens by itself as soon as the "
               "command lets go; nothing is lost meanwhile. To work in the app and the terminal at once, start the "
               "app first: commands then run through it.", icon=":material/hourglass_top:")
    st.caption(str(exc))

    @st.fragment(run_every=2.0)
    def wait_for_store() -> None:
        try:
            wb_ui.get_store()
        except StoreBusy:
            return
        st.rerun()

    wait_for_store()
    st.button("Try now", key="busy_retry", help="Try to open the project again now.")


def main() -> None:
    import wb_ui
    from workbench.core.errors import StoreBusy, WorkbenchError

    st.set_page_config(page_title="Workbench", layout="wide")
    pages = all_pages()
    try:
        wb_ui.get_store()
        user = wb_ui.signed_in_user()
    except StoreBusy as exc:  # a command in a terminal holds the database right now
        st.navigation(pages, position="hidden")
        busy_page(exc)
        st.stop()
    except WorkbenchError as exc:
        st.navigation(pages, position="hidden")
        wb_ui.show_error(exc)
        st.stop()
    if user is None:  # the project has accounts and nobody is signed in here
        st.navigation(pages, position="hidden")
        wb_ui.login_form()
        st.stop()
    if user.role != "admin":
        pages = {section: [p for p in entries if p.title in ROLE_PAGES.get(user.role, set())]
                 for section, entries in pages.items()}
        pages = {section: entries for section, entries in pages.items() if entries}
    page = st.navigation(pages)

    with st.sidebar:
        st.caption("Project folder")
        st.code(wb_ui.current_project_dir(), language=None, wrap_lines=True)
        wb_ui.user_badge(user)

    page.run()


if __name__ == "__main__":
    main()
else:  # imported by `streamlit run` to find the server
    app = st.App(__file__, routes=wb_server.routes(), middleware=wb_server.middleware())
