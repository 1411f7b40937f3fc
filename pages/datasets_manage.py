"""The Datasets page's Manage section: rename a dataset, archive it (it leaves the lists and pickers; its
versions stay), and bring archived datasets back (workbench.data.manage)."""

from __future__ import annotations

import streamlit as st

import wb_ui
import widgets
from workbench.core import versions
from workbench.data import manage

PICK = ""  # the Datasets page's version picker (page_datasets.PICK): it follows a renamed dataset
FLASH = "mg_flash"


def manage_section(store, user=None) -> None:
    user = user or wb_ui.current_user()
    if FLASH in st.session_state:
        st.success(st.session_state.pop(FLASH), icon=":material/check_circle:")
    with st.expander("Manage datasets", icon=":material/settings:"):
        if not user.can("manage_datasets"):
            st.info("Only an admin can rename or archive datasets.", icon=":material/lock:")
            return
        names = [d["name"] for d in versions.list_datasets(store)]
        follow_picker(names)
        if names:
            rename_form(store, user, names)
            st.divider()
            archive_form(store, user, names)
        else:
            st.caption("No datasets in use to rename or archive.")
        st.divider()
        archived_list(store, user)


def follow_picker(names: list[str]) -> None:
    """The forms start on the dataset chosen in the page's picker, and follow it when it changes."""
    current = st.session_state.get(f"{PICK}dataset")
    if current in names and st.session_state.get("mg_followed") != current:
        st.session_state["mg_followed"] = current
        st.session_state["mg_rename_from"] = st.session_state["mg_archive_name"] = current


def rename_form(store, user, names: list[str]) -> None:
    st.markdown("**Rename**")
    left, right = st.columns(2)
    old = left.selectbox("Dataset to rename", names, key="mg_rename_from",
                         help="Every version keeps its records and content hash; its questions, training runs and "
                              "evaluations follow it to the new name.")
    new = right.text_input("New name", key="mg_rename_to", placeholder="for example tickets-2026",
                           help="Letters, digits, '_', '-' and '.', starting with a letter; not a name in use.")
    if st.button("Rename", key="mg_rename", icon=":material/edit:",
                 help="Give the dataset the new name. The old name no longer finds it."):
        with widgets.user_errors():
            out = manage.rename_dataset(store, old, new, user=user)
            widgets.show_next(PICK, out["dataset"], out["versions"])
            done(f"Renamed **{old}** to **{out['dataset']}** ({widgets.plural(out['versions'], 'version')}).")


def archive_form(store, user, names: list[str]) -> None:
    st.markdown("**Archive**")
    name = st.selectbox("Dataset to archive", names, key="mg_archive_name",
                        help="It leaves the dataset lists and pickers. Nothing is deleted: its versions stay "
                             "readable by name (for example in the SQL console) and it can be unarchived below.")
    sure = st.checkbox(f"Yes, archive {name}", key=f"mg_archive_sure::{name}",
                       help="Confirms the archive; the button stays off until this is ticked.")
    if st.button("Archive", key="mg_archive", icon=":material/archive:", disabled=not sure,
                 help="Archive the dataset chosen above." if sure else "Tick the confirmation first."):
        with widgets.user_errors():
            manage.archive_dataset(store, name, user=user)
            others = [n for n in names if n != name]
            if others and st.session_state.get(f"{PICK}dataset") == name:
                widgets.show_next(PICK, others[0], versions.get_version(store, others[0]).number)
            done(f"Archived **{name}**; unarchive it under **Manage datasets** to list it again.")


def archived_list(store, user) -> None:
    st.markdown("**Archived datasets**")
    archived = versions.list_datasets(store, archived=True)
    if not archived:
        st.caption("None: every dataset is listed.")
        return
    widgets.table(archived, column_order=["name", "version", "records", "format", "archived_at"],
                  column_config={"version": "newest version", "archived_at": "archived",
                                 "records": st.column_config.NumberColumn(format="%d")})
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    name = left.selectbox("Archived dataset", [d["name"] for d in archived], key="mg_unarchive_name",
                          help="The dataset to list again.")
    if right.button("Unarchive", key="mg_unarchive", icon=":material/unarchive:",
                    help="Bring the dataset back into the lists and pickers."):
        with widgets.user_errors():
            out = manage.unarchive_dataset(store, name, user=user)
            widgets.show_next(PICK, name, out["versions"])
            done(f"**{name}** is listed again.")


def done(message: str) -> None:
    """Say what happened after the rerun that shows it in the tables and pickers above."""
    st.session_state[FLASH] = message
    st.rerun()
