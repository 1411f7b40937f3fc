"""Accounts, roles and sessions.

Passwords are hashed with argon2id (argon2-cffi) and never stored plain; a session is a random
token of which only the sha256 is stored, with an expiry. With no users configured the project
runs as one local owner (`LOCAL_USER`, an admin) and `workbench serve` refuses other addresses
than this machine's (see `workbench.cli.serve`).

Every library function that changes data takes the acting `User` and calls `require_role(user,
action)` itself, so a page that forgets to hide a button cannot be used to go around the check.
A User that came from a sign-in carries its session, and require_role checks at every call that
the session is still live: a tab left open after sign-out or expiry cannot write.
Failed sign-ins slow the next ones down, per account and per address (`wb_signin_failures`).
`user=None` in those functions means the project's owner working locally (the CLI, a script):
whoever can run them can already read and write the project files.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
    "manage_datasets": frozenset({"admin"}),  # rename, archive and unarchive datasets
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
class Session:
    """The sign-in a User came from (only the token's sha256), checked again at every write."""
    store: Store
    token_sha256: str

    def live_role(self, *, now: datetime | None = None) -> str | None:
        """The user's role while the session lives; None once it is ended, expired or its user removed."""
        rows = self.store.cursor().execute(
            "SELECT u.role FROM wb_sessions s JOIN wb_users u ON u.name = s.name "
            "WHERE s.token_sha256 = ? AND s.expires_at > ?", [self.token_sha256, now or now_utc()]).fetchall()
        return rows[0][0] if rows else None


@dataclass(frozen=True)
class User:
    name: str
    role: str
    session: Session | None = field(default=None, compare=False, repr=False)
    """Set for a signed-in user: require_role refuses once this session has ended."""

    def can(self, action: str) -> bool:
        return self.role in PERMISSIONS.get(action, frozenset())


LOCAL_USER = User("local", "admin")  # the single user of a project without accounts


class PermissionDenied(WorkbenchError):
    """The signed-in user's role does not allow this action."""


class SessionEnded(PermissionDenied):
    """The session the user signed in with was ended (signed out, expired, account changed)."""


class SignInDelayed(WorkbenchError):
    """Too many failed sign-ins: no password is checked until `until`."""

    def __init__(self, message: str, until: datetime):
        super().__init__(message)
        self.until = until


def now_utc() -> datetime:
    """Naive UTC: every timestamp the workbench stores is in UTC."""
    return datetime.now(UTC).replace(tzinfo=None)



def require_role(user: User | None, action: str) -> User:
    """The acting user, or PermissionDenied when their role may not do `action`.

    None stands for the local owner (CLI, scripts; see the module docstring). A signed-in user's
    session must still be live now, with the same role: the check runs at the time of the write."""
    if action not in PERMISSIONS:
        raise ValueError(f"unknown action {action!r}")
    user = user or LOCAL_USER
    if user.session is not None and user.session.live_role() != user.role:
        raise SessionEnded(f"the session of {user.name} has ended (signed out, expired or the account changed); "
                           "nothing was saved: sign in again")
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


def shortfall(store: Store, action: str, needed: int) -> str | None:
    """Why `needed` different people can never do `action` (a question's annotators per record, a review's
    reviewers per item) with the accounts that exist; None when they can, or when the project has no
    accounts (one local user: the number is then the owner's plan, not a promise)."""
    users = list_users(store)
    if not users:
        return None
    able = [u["name"] for u in users if u["role"] in PERMISSIONS.get(action, frozenset())]
    if needed <= len(able):
        return None
    roles = " or ".join(sorted(PERMISSIONS.get(action, frozenset())))
    return (f"{needed} different people are needed per record, but only {len(able)} "
            f"account{'' if len(able) == 1 else 's'} may {action} ({roles}): no record could ever be complete. "
            f"Lower the number, or add accounts first.")


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


# Back-off after failed sign-ins. Each key (an account, an address) has some free tries; every failure
# after those locks the key for twice as long as the one before, up to MAX_DELAY. Failures are forgotten
# FORGET after the last one. Locked keys answer at once, without spending argon2 time on the password.
FREE_TRIES = {"account": 5, "address": 20}  # an address may be shared by a whole office
FIRST_DELAY = timedelta(seconds=2)
MAX_DELAY = timedelta(minutes=15)
FORGET = timedelta(hours=1)


def _failure_keys(name: str, address: str | None) -> dict[str, str]:
    keys = {"account": f"account:{name[:100]}"}
    if address:
        keys["address"] = f"address:{address}"
    return keys


def signin_locked_until(store: Store, name: str, address: str | None = None, *,
                        now: datetime | None = None) -> datetime | None:
    """When the account or the address may try again, if either is locked now."""
    now = now or now_utc()
    keys = list(_failure_keys(name, address).values())
    rows = store.cursor().execute(
        f"SELECT max(locked_until) FROM wb_signin_failures WHERE key IN ({', '.join('?' * len(keys))}) "
        "AND locked_until > ?", [*keys, now]).fetchall()
    return rows[0][0]


def _record_failure(store: Store, name: str, address: str | None, now: datetime) -> None:
    def write(cur):
        cur.execute("DELETE FROM wb_signin_failures WHERE last_failure < ? AND coalesce(locked_until, ?) <= ?",
                    [now - FORGET, now, now])  # forgotten keys (the names tried need not exist)
        for kind, key in _failure_keys(name, address).items():
            rows = cur.execute("SELECT failures, last_failure FROM wb_signin_failures WHERE key = ?", [key]).fetchall()
            failures = 1 + (rows[0][0] if rows and now - rows[0][1] < FORGET else 0)
            over = failures - FREE_TRIES[kind]
            until = now + min(FIRST_DELAY * 2 ** min(over - 1, 20), MAX_DELAY) if over > 0 else None
            cur.execute("INSERT OR REPLACE INTO wb_signin_failures VALUES (?, ?, ?, ?)", [key, failures, now, until])

    store.retry(write)


def _delayed(until: datetime, now: datetime) -> SignInDelayed:
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    wait = f"{seconds} s" if seconds < 120 else f"{(seconds + 59) // 60} min"
    return SignInDelayed(f"too many failed sign-ins for this account or from this address; try again in {wait} "
                         f"(at {until:%H:%M:%S} UTC)", until)


def authenticate(store: Store, name: str, password: str, *, address: str | None = None,
                 now: datetime | None = None) -> User | None:
    """The user when the password matches, else None (the same answer for an unknown name).

    address: where the attempt comes from (the app passes the client's IP). Raises SignInDelayed,
    without checking the password, while the account or the address is locked after failures."""
    now = now or now_utc()
    until = signin_locked_until(store, name, address, now=now)
    if until is not None:
        raise _delayed(until, now)
    rows = store.cursor().execute("SELECT role, password_hash FROM wb_users WHERE name = ?", [name]).fetchall()
    if not rows:
        _hasher.hash(password)  # spend the same time, so a wrong name and a wrong password look alike
        _record_failure(store, name, address, now)
        return None
    role, digest = rows[0]
    try:
        _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        _record_failure(store, name, address, now)
        return None
    key = _failure_keys(name, None)["account"]  # the address keeps its count: one right password proves little
    store.retry(lambda cur: cur.execute("DELETE FROM wb_signin_failures WHERE key = ?", [key]))
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
    if not rows:
        return None
    name, role = rows[0]
    return User(name, role, session=Session(store, _token_digest(token)))


def end_session(store: Store, token: str | None) -> None:
    if token:
        store.retry(lambda cur: cur.execute("DELETE FROM wb_sessions WHERE token_sha256 = ?", [_token_digest(token)]))


# ---------------------------------------------------------------- which host names the server answers

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_host_names(bind_host: str, extra=()) -> list[str]:
    """The Host header values the app accepts when `workbench serve --host bind_host` runs it: this
    machine's loopback names, the address it was started on and, on a wildcard address, this
    machine's own names and addresses, plus `extra` (`[server] allowed_hosts` of workbench.toml, for
    a DNS name or a proxy in front). Any other name is refused: a web page that re-points its own
    domain at this machine (DNS rebinding) cannot reach the app."""
    import socket

    names = list(LOOPBACK_NAMES)
    if bind_host not in ("", "0.0.0.0", "::"):
        names.append(bind_host)
    else:
        host = socket.gethostname()
        names += [host, socket.getfqdn()]
        try:
            # a sockaddr's first item is the address text, except (int, bytes) on a Python built without IPv6
            names += [info[4][0] for info in socket.getaddrinfo(host, None) if isinstance(info[4][0], str)]
        except OSError:
            pass
        try:  # the address other machines reach this one on (no packet is sent)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("192.0.2.1", 9))
                names.append(probe.getsockname()[0])
        except OSError:
            pass
    names += [str(n) for n in extra]
    return list(dict.fromkeys(n.strip().lower() for n in names if n and n.strip()))
