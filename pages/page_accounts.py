"""Accounts: who may use this project and in which role (what `workbench users add|list|remove` does).

Admins only (the navigation offers the page to no other role, and workbench.core.auth checks again)."""

import pandas as pd
import streamlit as st

import wb_ui
import widgets
from workbench.core import auth

ROLE_HELP = {"admin": "everything: data, questions, training, accounts",
             "annotator": "answers questions on the Label page",
             "reviewer": "labels, and judges model answers on the Review page"}

store, user = wb_ui.get_store(), wb_ui.current_user()
st.title("Accounts")
if not user.can("manage_users"):
    st.info("Only an admin manages accounts.", icon=":material/lock:")
    st.stop()
if (flash := st.session_state.pop("acct_flash", None)):
    st.success(flash, icon=":material/check:")
users = auth.list_users(store)
if users:
    widgets.table(pd.DataFrame(users), column_config={"name": "account", "created_by": "added by"})
else:
    st.info("This project has no accounts: whoever opens the app works as its single local admin. Add an admin "
            "account first; from then on everyone signs in.", icon=":material/info:")

with st.expander("Add an account, or set a new role and password", icon=":material/person_add:", expanded=not users):
    with st.form("acct_add", clear_on_submit=True):
        c1, c2 = st.columns(2)
        name = c1.text_input("Name", key="acct_name", help="Letters, digits and . _ - @ (for example ana.lima).")
        role = c2.selectbox("Role", auth.ROLES, key="acct_role", format_func=lambda r: f"{r}: {ROLE_HELP[r]}",
                            index=0 if not users else 1, help="What the account may do.")
        password = st.text_input("Password", type="password", key="acct_password",
                                 help=f"At least {auth.MIN_PASSWORD} characters; tell it to the person yourself.")
        replace = st.checkbox("Replace an existing account's role and password", key="acct_replace",
                              help="Otherwise an existing name is refused. Replacing ends that account's sessions.")
        submitted = st.form_submit_button("Save account", type="primary", icon=":material/save:",
                                          help="Create the account (or replace it, when ticked above).")
    if submitted:
        with widgets.user_errors():
            auth.add_user(store, name.strip(), role, password, actor=user, replace=replace)
            st.session_state["acct_flash"] = f"Saved **{wb_ui.safe_markdown(name.strip())}** ({role})." + (
                " The project now has accounts: sign in with it." if not users else "")
            st.rerun()

if users:
    with st.expander("Remove an account", icon=":material/person_remove:"):
        names = [u["name"] for u in users]
        gone = st.selectbox("Account", names, key="acct_remove_name",
                            help="Its sessions end at once; its annotations and ratings stay (they are history).")
        confirm = st.checkbox(f"Yes, remove {gone}", key=f"acct_confirm::{gone}",
                              help="Removing cannot be undone (the account can be added again).")
        if st.button("Remove", key="acct_remove", disabled=not confirm, icon=":material/delete:",
                     help="Delete the account and end its sessions."):
            with widgets.user_errors():
                auth.remove_user(store, gone, actor=user)
                st.session_state["acct_flash"] = f"Removed **{wb_ui.safe_markdown(gone)}**."
                st.rerun()
