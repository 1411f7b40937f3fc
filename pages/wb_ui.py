"""What every page shares: the project's store and how a user error is shown."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import streamlit as st
import wb_server

from workbench.core.errors import WorkbenchError
from workbench.core.formats import CANONICAL
from workbench.core.project import open_project, project_dir
from workbench.core.store import Store
from workbench.data import browse


@st.cache_resource(show_spinner=False, on_release=lambda store: store.close())
def _store_for(root: str) -> Store:
    return Store(open_project(root, create=True))


def current_project_dir() -> str:
    """The project folder this server was started on (WORKBENCH_PROJECT, default ./workbench-data)."""
    return str(project_dir(os.environ.get("WORKBENCH_PROJECT")))


def get_store() -> Store:
    """The one read-write store of this server process, keyed by project folder.

    Raises WorkbenchError when the database is held by another process (a running CLI import).
    """
    return _store_for(current_project_dir())


def show_error(exc: BaseException | str) -> None:
    """A user error as one red line, never a traceback."""
    st.error(str(exc), icon=":material/error:")


def visible_columns(table: pa.Table) -> list[str]:
    """All columns but the canonical ones this page leaves empty (`messages` and `system` of
    prompt-completion data, `completion` of classification data)."""
    return [name for name in table.column_names
            if name not in CANONICAL or table.column(name).null_count < table.num_rows]


def version_rows(dataset_versions: list, all_versions: list) -> list[dict]:
    """The versions table of one dataset, newest first, with parents named as 'dataset@N'."""
    refs = {v.version_id: v.ref for v in all_versions}
    return [{"version": v.number, "kind": v.kind, "records": v.row_count, "format": v.format,
             "content hash": v.content_hash[:12],
             "parent": None if v.parent_id is None else refs.get(v.parent_id, f"#{v.parent_id}"),
             "created": v.created_at} for v in reversed(dataset_versions)]


# Versions never change, so what a query says about one can be kept for the life of the server.
# The key names the project and the version's content, so two projects never share an entry.

def version_key(store: Store, version) -> tuple:
    return str(store.project.root), version.version_id, version.content_hash


@st.cache_data(max_entries=256, show_spinner="Counting matching records…")
def count_matching(_store: Store, _version, key: tuple, text: str, categories: tuple) -> int:
    """browse.count with filters (a full scan), once per version and filter."""
    return browse.count(_store, _version, text=text, category=list(categories))


@st.cache_data(max_entries=64, show_spinner=False)
def category_counts(_store: Store, _version, key: tuple) -> list:
    """browse.value_counts of the category column, once per version."""
    return browse.value_counts(_store, _version)


# ---------------------------------------------------------------- accounts (workbench.core.auth)

SESSION_KEY = "wb_session_token"
COOKIE_KEY = "wb_cookie_write"  # a one-time handoff for the cookie to write (or clear) on the next run


def _cookie_name() -> str:
    """One cookie per project: browsers share cookies between ports of one host."""
    import hashlib

    return "wb_session_" + hashlib.sha256(current_project_dir().encode()).hexdigest()[:12]


def _offer_cookie(value: str, seconds: float) -> str:
    """A one-time nonce that the page trades for the session cookie (see wb_server)."""
    return wb_server.offer_cookie(_cookie_name(), value, seconds)


def _write_pending_cookie() -> None:
    """Trade the handoff of a sign-in or sign-out for the cookie (a script in the page that posts the
    nonce; the token itself never reaches the page). Without the route (AppTest, a bare `streamlit run`
    of another entry) the post fails and a reload simply asks for the password again."""
    nonce = st.session_state.pop(COOKIE_KEY, None)
    if nonce is None:
        return
    st.html(f"<script>fetch({json.dumps(wb_server.COOKIE_ROUTE)}, {{method: 'POST', body: {json.dumps(nonce)}, "
            "credentials: 'same-origin', cache: 'no-store'});</script>", unsafe_allow_javascript=True, width=1)


def signed_in_user():
    """The acting user: the local owner when the project has no accounts; else the user of this
    browser session's live token, or None (signed out, or the session expired). A reload keeps the
    sign-in: the token is also in a cookie, read back when a new browser session starts."""
    from workbench.core import auth

    store = get_store()
    if not auth.has_users(store):
        return auth.LOCAL_USER
    _write_pending_cookie()
    token = st.session_state.get(SESSION_KEY)
    if token is None:
        cookie = st.context.cookies.get(_cookie_name())
        token = cookie if isinstance(cookie, str) and cookie else None
    user = auth.session_user(store, token)
    if user is None:
        st.session_state.pop(SESSION_KEY, None)
    else:
        st.session_state[SESSION_KEY] = token
    return user


def current_user():
    """The signed-in user, for pages (the app's gate has already asked for a sign-in)."""
    user = signed_in_user()
    if user is None:
        st.warning("Your session has ended; sign in again.", icon=":material/lock:")
        st.stop()
    return user


def login_form() -> None:
    """Name and password; a session starts on success (it expires, see `[auth] session_hours`)."""
    from workbench.core import auth

    st.title("Sign in")
    st.caption("This project has accounts; an admin adds them with `workbench users add NAME --role ROLE`.")
    with st.form("login"):
        name = st.text_input("Name", key="login_name", help="Your account name.")
        password = st.text_input("Password", type="password", key="login_password", help="Your password.")
        submitted = st.form_submit_button("Sign in", type="primary", help="Sign in and open the workbench.")
    if submitted:
        try:  # failed sign-ins slow the next ones down, per account and per address
            user = auth.authenticate(get_store(), name.strip(), password, address=st.context.ip_address)
        except auth.SignInDelayed as exc:
            show_error(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
            return
        if user is None:
            show_error("Unknown name or wrong password.")
            return
        token = auth.start_session(get_store(), user)
        st.session_state[SESSION_KEY] = token
        st.session_state[COOKIE_KEY] = _offer_cookie(token, auth.session_hours(get_store()) * 3600)
        st.rerun()


def logout() -> None:
    from workbench.core import auth

    auth.end_session(get_store(), st.session_state.pop(SESSION_KEY, None))
    st.session_state[COOKIE_KEY] = _offer_cookie("", 0)  # the cookie goes too (its session has already ended)


def user_badge(user) -> None:
    """Who is signed in, and a sign-out button (sidebar)."""
    from workbench.core import auth

    if user == auth.LOCAL_USER:
        st.caption("Single local user (no accounts)")
        return
    st.caption(f"Signed in as **{user.name}** ({user.role})")
    if st.button("Sign out", key="logout", icon=":material/logout:", help="End this session."):
        logout()
        st.rerun()


_MARKDOWN_SYNTAX = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_LEADING = re.compile(r"^[ \t]+")


def safe_markdown(text) -> str:
    """Text from data (records, guidelines, model responses, choice labels, column values) for any
    Streamlit call that renders markdown (st.markdown, captions, widget labels and options), shown
    as text: every ASCII punctuation character is backslash-escaped, which CommonMark reads as that
    literal character, so no image, link, autolink, HTML tag, code span, `$math$` or `:color[...]`
    can start, whatever backticks or brackets the data leaves unbalanced. Line breaks stay, and so
    does indentation (as no-break spaces: markdown drops leading spaces or makes code of them)."""
    if text is None or text == "":
        return ""
    lines = _MARKDOWN_SYNTAX.sub(r"\\\1", str(text)).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "  \n".join(_LEADING.sub(lambda m: m.group().replace("\t", "    ").replace(" ", "\u00a0"), line)
                       for line in lines)


# ---------------------------------------------------------------- one-at-a-time queues (Label, Review)

def _unskip(state: str) -> None:
    st.session_state[f"{state}::skipped"] = []


def queue_head(state: str, next_item, progress, *, overlap: int, noun: str, answers: str, what: str):
    """The top of a queue screen that Label and Review share: the next item (or the one reopened),
    the person's progress bar, the last save's message, and the "nothing left" note.

    next_item(exclude) and progress() call the library; returns (item or None, reopened) or None on error.
    Session keys under `state`: ::flash (the last save's message), ::skipped, ::revisit."""
    flash = st.session_state.pop(f"{state}::flash", None)
    skipped = st.session_state.setdefault(f"{state}::skipped", [])
    reopened = st.session_state.get(f"{state}::revisit")
    try:
        item = reopened or next_item(skipped)
        done = progress()
    except WorkbenchError as exc:
        show_error(exc)
        return None
    mine = done["done"] + done["remaining"]
    needed = f"all {overlap} {answers}" if overlap != 1 else f"one {answers.rstrip('s')}"
    st.progress(done["done"] / mine if mine else 1.0,
                text=f"You: {done['done']:,} done, {done['remaining']:,} remaining · {noun}s with {needed}: "
                     f"{done['complete']:,} of {done['total']:,}")
    if flash:
        (st.success if flash[0] == "success" else show_error)(flash[1])
    if item is None:
        st.success(f"Nothing left for you in this {what}: every {noun} has its {answers} or yours.",
                   icon=":material/task_alt:")
        if skipped:
            st.button(f"Show the {len(skipped)} skipped {noun}s again", key=f"{state}::unskip", on_click=_unskip,
                      args=(state,), help=f"Put the {noun}s you skipped back in your queue.")
    return item, reopened
