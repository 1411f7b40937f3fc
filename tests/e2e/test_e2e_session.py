"""The session cookie and the Host check on a real `workbench serve`, in a real browser: the token
is set HttpOnly, so a page on another port of the same host (which shares the host's cookies) cannot
read it; a reload keeps the sign-in; any Host header but the server's own names is refused, on plain
requests and on the websocket (DNS rebinding)."""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.e2e_helpers import UI, chromium, free_port, run_cli, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "Ada-admin-pass-5150"


class OtherApp(BaseHTTPRequestHandler):
    """Another app on another port of the same host: a page whose script reads document.cookie."""

    def do_GET(self):  # noqa: N802 - the http.server name
        body = b"<html><body><p id='c'></p><script>document.getElementById('c').textContent = " \
               b"'cookies:' + document.cookie;</script></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def status_with_host(port: int, host: str, path: str = "/", headers: dict | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        return conn.getresponse().status
    finally:
        conn.close()


def websocket_handshake(port: int, host: str) -> str:
    """The status line the server answers a websocket upgrade of Streamlit's stream with."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: http://{host}\r\n\r\n").encode())
        return s.recv(200).decode("latin-1").split("\r\n")[0]


def test_the_session_cookie_is_httponly_and_foreign_hosts_are_refused(tmp_path):
    project = tmp_path / "project"
    run_cli("users", "add", "ada", "--role", "admin", "--password-stdin", project=project, stdin=PASSWORD + "\n")
    other = ThreadingHTTPServer(("127.0.0.1", free_port()), OtherApp)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with serve(project, tmp_path / "server.log") as server, chromium() as browser:
            port = server.port
            assert status_with_host(port, f"127.0.0.1:{port}") == 200
            assert status_with_host(port, f"localhost:{port}") == 200
            assert status_with_host(port, f"rebound.example:{port}") == 400  # DNS rebinding: refused
            assert websocket_handshake(port, f"127.0.0.1:{port}").startswith("HTTP/1.1 101")
            assert not websocket_handshake(port, f"rebound.example:{port}").startswith("HTTP/1.1 101")

            ui = UI(browser, server.url, "session_cookie").open()
            ui.login("ada", PASSWORD)
            for _ in range(100):  # the page trades the sign-in's nonce for the cookie right after
                cookies = [c for c in ui.context.cookies() if c["name"].startswith("wb_session_")]
                if cookies:
                    break
                ui.page.wait_for_timeout(100)
            assert cookies and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict", cookies
            token = cookies[0]["value"]
            assert token not in ui.page.evaluate("document.cookie")

            ui.page.goto(f"http://127.0.0.1:{other.server_port}/")  # the other app, same host, same browser
            seen = ui.page.locator("#c").inner_text()
            assert seen.startswith("cookies:") and token not in seen and "wb_session_" not in seen

            ui.open()  # a reload keeps the sign-in: the browser still sends the cookie
            ui.wait_text("Signed in as ada")
            ui.click("Sign out")
            ui.page.get_by_role("heading", name="Sign in").first.wait_for()
            for _ in range(100):  # the sign-out clears the cookie too
                if not [c for c in ui.context.cookies() if c["name"].startswith("wb_session_")]:
                    break
                ui.page.wait_for_timeout(100)
            assert not [c for c in ui.context.cookies() if c["name"].startswith("wb_session_")]
            ui.close()
    finally:
        other.shutdown()
