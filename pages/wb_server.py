"""What `pages/app.py` adds to Streamlit's own server (st.App): the route that sets the session
cookie HttpOnly, and a Host check on every HTTP request. No streamlit caches here: this module is
imported before Streamlit's runtime starts.

Why a route: an HttpOnly cookie (one that no script in any page can read) can only come from an
HTTP response, and a Streamlit script talks to the page over a websocket. So a sign-in leaves a
one-time nonce in the server's memory, the page posts it to COOKIE_ROUTE, and the response sets
the cookie; the token itself never reaches the page.
"""

from __future__ import annotations

import secrets
import threading
import time

COOKIE_ROUTE = "/_wb/session-cookie"
HANDOFF_SECONDS = 60.0
_handoffs: dict[str, tuple[str, str, int, float]] = {}  # nonce -> (cookie name, value, max-age s, deadline)
_lock = threading.Lock()


def offer_cookie(name: str, value: str, seconds: float) -> str:
    """A nonce that COOKIE_ROUTE trades once, within HANDOFF_SECONDS, for cookie `name`=`value`."""
    nonce = secrets.token_urlsafe(32)
    now = time.monotonic()
    with _lock:
        for old in [n for n, h in _handoffs.items() if h[3] < now]:
            del _handoffs[old]
        _handoffs[nonce] = (name, value, int(seconds), now + HANDOFF_SECONDS)
    return nonce


def take_cookie(nonce: str) -> tuple[str, str, int] | None:
    """The cookie a nonce stands for, once; None when unknown, used or expired."""
    with _lock:
        handoff = _handoffs.pop(nonce, None)
    if handoff is None or handoff[3] < time.monotonic():
        return None
    return handoff[:3]


async def cookie_endpoint(request):
    """POST COOKIE_ROUTE with a nonce as the body: the session cookie, HttpOnly, SameSite=Strict,
    Secure over HTTPS (max-age 0 clears it on sign-out)."""
    from starlette.responses import Response

    nonce = (await request.body())[:200].decode("ascii", "replace").strip()
    handoff = take_cookie(nonce)
    if handoff is None:
        return Response("unknown or expired sign-in handoff", status_code=404)
    name, value, max_age = handoff
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


def _run_cli(body: dict) -> dict:
    import wb_ui  # imported on first use: it holds the app's store (a Streamlit resource)
    from workbench.cli import remote

    return remote.run_here(wb_ui.get_store(), [str(a) for a in body["argv"]], cwd=str(body["cwd"]),
                           stdin_text=body.get("stdin"))


async def cli_endpoint(request):
    """POST a command line from `workbench` on this machine (cli/remote.py): it runs on the app's own store.
    Only a caller that read the token from the project folder (owner-only file) is served."""
    import json

    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response

    from workbench.cli import remote

    if not remote.authorised(request.headers.get("authorization")):
        return Response("not authorised", status_code=403)
    try:
        body = json.loads(await request.body())
    except ValueError:
        return Response("expected a JSON body", status_code=400)
    return JSONResponse(await run_in_threadpool(_run_cli, body), headers={"Cache-Control": "no-store"})


def routes() -> list:
    from starlette.routing import Route

    from workbench.cli.remote import ROUTE

    return [Route(COOKIE_ROUTE, cookie_endpoint, methods=["POST"]), Route(ROUTE, cli_endpoint, methods=["POST"])]


def middleware() -> list:
    """Every HTTP request, not only the websocket that `server.allowedHosts` guards, must name an
    allowed host (`workbench serve` sets the list; empty: any host, Streamlit's default)."""
    import streamlit as st
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    hosts = [h.strip().strip("[]").lower() for h in st.get_option("server.allowedHosts") if h.strip()]
    if not hosts or "*" in hosts:
        return []
    return [Middleware(TrustedHostMiddleware, allowed_hosts=hosts + [f"[{h}]" for h in hosts if ":" in h])]
