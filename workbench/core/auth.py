"""Accounts, roles and sessions.

Passwords are hashed with argon2id (argon2-cffi) and never stored plain; a session is a random
token of which only the sha256 is stored, with an expiry. With no users configured the project
runs as one local owner (`LOCAL_USER`, an admin) and `workbench serve` refuses other addresses
than this machine's (see `workbench.cli.serve`).

Every library function that changes data takes the acting `User` and calls `require_role(user,
action)` itself, so a page that forgets to hide a button cannot be used to go around the check.
`user=None` in those functions means the project's owner working locally (the CLI, a script):
whoever can run them can already read and write the project files.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store

ROLES = ("admin", "annotator", "reviewer")

# What each role may do. Library functions name the action they perform.
PERMISSIONS: dict[str, frozenset[str]] = {
    "annotate": frozenset({"admin", "annotator", "reviewer"}),  # answer a question as oneself
    "review": frozenset({"admin", "reviewer"}),  # rate model outputs as oneself
    "adjudicate": frozenset({"admin"}),  # set gold values, apply majority vote
    "edit_questions": frozenset({"admin"}),  # add or change questions, guidelines, overlap
    "import": frozenset({"admin"}),  # import datasets or annotations
    "write_version": frozenset({"admin"}),  # make a new dataset version (labels, balance, splits)
    "delete": frozenset({"admin"}),
    "train": frozenset({"admin"}),
    "evaluate": frozenset({"admin"}),
    "manage_users": frozenset({"admin"}),
    "read_all": frozenset({"admin"}),  # see every annotator's answers, agreement, SQL
}

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")
MIN_PASSWORD = 8
SESSION_HOURS = 12.0


_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, action: str) -> bool:
        return self.role in PERMISSIONS.get(action, frozenset())


LOCAL_USER = User("local", "admin")  # the single user of a project without accounts


class PermissionDenied(WorkbenchError):
    """The signed-in user's role does not allow this action."""


def now_utc() -> datetime:
    """Naive UTC: every timestamp the workbench stores is in UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)



def require_role(user: User | None, action: str) -> User:
    """The acting user, or PermissionDenied when their role may not do `action`.

    None stands for the local owner (CLI, scripts; see the module docstring)."""
    if action not in PERMISSIONS:
        raise ValueError(f"unknown action {action!r}")
    user = user or LOCAL_USER
    if not user.can(action):
        allowed = " or ".join(sorted(PERMISSIONS[action]))
        raise PermissionDenied(f"{user.name} is a{'n' if user.role[0] in 'aeiou' else ''} {user.role} and may not "
                               f"{action.replace('_', ' ')}; ask an {allowed} to do it")
    return user


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise WorkbenchError(f"user name {name!r} is not allowed; use 1-64 letters, digits, '_', '.', '-' or '@'")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise WorkbenchError(f"role {role!r} is not known; expected one of {', '.join(ROLES)}")
    return role


def has_users(store: Store) -> bool:
    return store.cursor().execute("SELECT count(*) FROM wb_users").fetchall()[0][0] > 0


def list_users(store: Store) -> list[dict]:
    rows = store.cursor().execute(
        "SELECT name, role, created_at, created_by FROM wb_users ORDER BY name").fetchall()
    return [{"name": n, "role": r, "created_at": c, "created_by": b} for n, r, c, b in rows]


def get_user(store: Store, name: str) -> User | None:
    rows = store.cursor().execute("SELECT name, role FROM wb_users WHERE name = ?", [name]).fetchall()
    return User(*rows[0]) if rows else None


def add_user(store: Store, name: str, role: str, password: str, *, actor: User | None = None,
             replace: bool = False) -> User:
    """Create a user (or, with replace, set a new role and password). Only admins manage users;
    the first user of a project must be an admin, so that someone can manage the rest."""
    require_role(actor, "manage_users")
    _check_name(name)
    _check_role(role)
    if len(password) < MIN_PASSWORD:
        raise WorkbenchError(f"the password is {len(password)} characters; use at least {MIN_PASSWORD}")
    digest = _hasher.hash(password)

    def write(cur):
        existing = cur.execute("SELECT role FROM wb_users WHERE name = ?", [name]).fetchall()
        admins = cur.execute("SELECT count(*) FROM wb_users WHERE role = 'admin' AND name <> ?", [name]).fetchall()
        others = cur.execute("SELECT count(*) FROM wb_users WHERE name <> ?", [name]).fetchall()[0][0]
        if existing and not replace:
            raise WorkbenchError(f"user {name!r} exists; remove it first or choose another name")
        if role != "admin" and admins[0][0] == 0:
            raise WorkbenchError(
                f"add an admin first (`workbench users add NAME --role admin`): without one nobody could manage "
                f"users{' or questions' if others == 0 else ''}")
        if existing:
            cur.execute("UPDATE wb_users SET role = ?, password_hash = ? WHERE name = ?", [role, digest, name])
            cur.execute("DELETE FROM wb_sessions WHERE name = ?", [name])
        else:
            cur.execute("INSERT INTO wb_users VALUES (?, ?, ?, ?, ?)",
                        [name, role, digest, now_utc(), (actor or LOCAL_USER).name])

    store.retry(write)
    return User(name, role)


def remove_user(store: Store, name: str, *, actor: User | None = None) -> None:
    """Delete an account and its sessions. Their annotations stay (they are history)."""
    require_role(actor, "manage_users")

    def write(cur):
        rows = cur.execute("SELECT role FROM wb_users WHERE name = ?", [name]).fetchall()
        if not rows:
            raise WorkbenchError(f"no user named {name!r}; see `workbench users list`")
        if rows[0][0] == "admin":
            left = cur.execute("SELECT count(*) FROM wb_users WHERE role = 'admin' AND name <> ?",
                               [name]).fetchall()[0][0]
            users_left = cur.execute("SELECT count(*) FROM wb_users WHERE name <> ?", [name]).fetchall()[0][0]
            if left == 0 and users_left:
                raise WorkbenchError(f"{name!r} is the last admin; add another admin before removing it")
        cur.execute("DELETE FROM wb_sessions WHERE name = ?", [name])
        cur.execute("DELETE FROM wb_users WHERE name = ?", [name])

    store.retry(write)


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The user when the password matches, else None (the same answer for an unknown name)."""
    rows = store.cursor().execute("SELECT role, password_hash FROM wb_users WHERE name = ?", [name]).fetchall()
    if not rows:
        _hasher.hash(password)  # spend the same time, so a wrong name and a wrong password look alike
        return None
    role, digest = rows[0]
    try:
        _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(digest):
        new = _hasher.hash(password)
        store.retry(lambda cur: cur.execute("UPDATE wb_users SET password_hash = ? WHERE name = ?", [new, name]))
    return User(name, role)


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_hours(store: Store) -> float:
    """How long a sign-in lasts: `[auth] session_hours` of workbench.toml, else 12."""
    return float(store.project.setting("auth", "session_hours", SESSION_HOURS))


def start_session(store: Store, user: User, *, hours: float | None = None, now: datetime | None = None) -> str:
    """A new session token for the user; only its sha256 is stored. It expires after `hours`
    (default: `[auth] session_hours` of workbench.toml, else 12)."""
    hours = hours if hours is not None else session_hours(store)
    now = now or now_utc()
    token = secrets.token_urlsafe(32)

    def write(cur):
        cur.execute("DELETE FROM wb_sessions WHERE expires_at <= ?", [now])
        cur.execute("INSERT INTO wb_sessions VALUES (?, ?, ?, ?)",
                    [_token_digest(token), user.name, now, now + timedelta(hours=hours)])

    store.retry(write)
    return token


def session_user(store: Store, token: str | None, *, now: datetime | None = None) -> User | None:
    """The user of a live session; None when the token is unknown, expired or its user removed."""
    if not token:
        return None
    rows = store.cursor().execute(
        "SELECT u.name, u.role FROM wb_sessions s JOIN wb_users u ON u.name = s.name "
        "WHERE s.token_sha256 = ? AND s.expires_at > ?", [_token_digest(token), now or now_utc()]).fetchall()
    return User(*rows[0]) if rows else None


def end_session(store: Store, token: str | None) -> None:
    if token:
        store.retry(lambda cur: cur.execute("DELETE FROM wb_sessions WHERE token_sha256 = ?", [_token_digest(token)]))
