"""What the browser journeys, crash and access tests share: a real `workbench serve` on a free
localhost port, Debian's Chromium driven by Playwright, and a small vocabulary for Streamlit
widgets (Streamlit renders after its websocket connects, so everything waits for text, not loads).

Screenshots go to test-artifacts/<journey>/NN-name.png (CI keeps the folder as an artefact).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 45_000  # the longest one script run may take on a busy two-core CI machine
TRACE = bool(os.environ.get("E2E_TRACE"))  # E2E_TRACE=1 prints how long each wait for a script run took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, project, stdin: str | None = None, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """`python -m workbench ARGS --project P` as a user would type it (in cwd, default this directory)."""
    proc = subprocess.run([sys.executable, "-m", "workbench", *args, "--project", str(project)], input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc



class Server:
    """`python -m workbench serve` in its own process group (it runs streamlit in a child)."""

    def __init__(self, project, log: Path):
        self.project, self.log = str(project), Path(log)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workbench", "serve", "--project", self.project, "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, WORKBENCH_PROJECT=self.project))

    def wait_healthy(self, timeout: float = 90) -> Server:
        url = f"{self.url}_stcore/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200 and r.read().strip() == b"ok":
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        pytest.fail(f"{url} did not answer ok within {timeout:g} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def wait_group(self, timeout: float) -> bool:
        """True when every process of the group (the CLI and its streamlit child) has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self.group_alive():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL if it lingers; returns once no process of it holds the store."""
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            if not self.wait_group(20):
                self.kill()
        self.proc.wait(timeout=15)

    def kill(self) -> None:
        """SIGKILL to the whole group: nothing gets to clean up (a crash, a power cut for the process)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=15)
        self.wait_group(15)


@contextmanager
def serve(project, log: Path):
    server = Server(project, log)
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@contextmanager
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


_CLEARED: set[str] = set()


class UI:
    """One browser tab on the app, with Streamlit-aware helpers and numbered screenshots."""

    def __init__(self, browser, url: str, journey: str, *, width: int = 1440, height: int = 1000):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.url, self.width, self.height = url, width, height
        self.folder = ARTIFACTS / journey
        if journey not in _CLEARED:  # no screenshot of an earlier run may pass for this one's
            shutil.rmtree(self.folder, ignore_errors=True)
            _CLEARED.add(journey)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.shots = 0

    # ------------------------------------------------------------ waiting
    def open(self, path: str = "") -> UI:
        self.page.goto(self.url + path, wait_until="domcontentloaded")
        self.page.locator('[data-testid="stApp"]').wait_for()
        self.settle()
        return self

    def settle(self, timeout_ms: int = WAIT_MS) -> None:
        """Wait until the script run that an action started has finished (no 'Running' status, no stale
        elements). A short grace period first: the rerun request travels over the websocket."""
        start = time.monotonic()
        self.page.wait_for_timeout(250)
        self.page.wait_for_function(
            """() => {
                const status = document.querySelector('[data-testid="stStatusWidget"]');
                const running = status && /running|connecting/i.test(status.innerText || '');
                const stale = document.querySelector('[data-stale="true"]');
                const loading = document.querySelector('[data-testid="stMain"] [data-testid="stSkeleton"]');
                return document.querySelector('[data-testid="stMain"]') && !running && !stale && !loading;
            }""", timeout=timeout_ms, polling=100)
        if TRACE:
            print(f"  settled in {time.monotonic() - start:.1f} s", file=sys.stderr)

    def wait_text(self, text: str | re.Pattern, *, timeout_ms: int = WAIT_MS):
        loc = self.page.get_by_text(text).first
        loc.wait_for(timeout=timeout_ms)
        return loc

    def cells(self, frame) -> list[str]:
        """The texts of a st.dataframe's visible cells (the grid draws on a canvas; Streamlit keeps an
        accessible table of the cells in view beside it)."""
        frame.locator('[role="gridcell"]').first.wait_for(state="attached")
        return [c.text_content() for c in frame.locator('[role="gridcell"]').all()]

    def body(self) -> str:
        return self.page.inner_text('[data-testid="stMain"]')

    # ------------------------------------------------------------ widgets
    def widget(self, testid: str, label: str):
        """The widget of this kind whose label is exactly `label`."""
        return self.page.locator(f'[data-testid="{testid}"]').filter(
            has=self.page.locator('[data-testid="stWidgetLabel"]').get_by_text(label, exact=True)).first

    def fill(self, label: str, value: str, *, commit: bool = True) -> None:
        box = self.page.get_by_label(label, exact=True).first
        box.fill(value)
        if commit:  # a text input reruns the script on Enter (inside a form it waits for the submit button)
            box.press("Enter")
            self.settle()

    def select(self, label: str, option: str, *, within=None) -> None:
        """Choose an option of a st.selectbox (Streamlit 1.67 draws it as a react-aria combobox)."""
        self._open_combobox(label, within)
        self._option(option)
        self.settle()

    def multiselect(self, label: str, option: str | re.Pattern, *, within=None) -> None:
        self._open_combobox(label, within)
        self._option(option)
        self.page.keyboard.press("Escape")
        self.settle()

    def _open_combobox(self, label: str, within) -> None:
        box = (within or self.page).get_by_role("combobox", name=label, exact=True).first
        box.click()
        if box.get_attribute("aria-expanded") != "true":  # a click does not always open it; the arrow key does
            box.press("ArrowDown")

    def _option(self, option: str | re.Pattern) -> None:
        pattern = option if isinstance(option, re.Pattern) else re.compile(rf"^\s*{re.escape(option)}\s*$")
        self.page.get_by_role("option").filter(has_text=pattern).first.click()

    def radio(self, label: str, option: str) -> None:
        self.widget("stRadio", label).get_by_text(option, exact=True).click()
        self.settle()

    def tab(self, name: str) -> None:
        """Open a tab of st.tabs (while a rerun redraws the page, the old tabs may still be there too)."""
        self.settle()
        tabs = self.page.get_by_role("tab", name=name)
        tabs.first.wait_for()
        deadline = time.monotonic() + WAIT_MS / 1000
        while tabs.count() > 1 and time.monotonic() < deadline:  # the old set goes when the run ends
            self.page.wait_for_timeout(100)
        tabs.first.click()
        self.page.wait_for_timeout(300)
        while tabs.first.get_attribute("aria-selected") != "true" and time.monotonic() < deadline:
            tabs.first.click()  # a click that landed while a rerun replaced the tab bar
            self.page.wait_for_timeout(300)

    def click(self, name: str | re.Pattern, *, exact: bool = True, settle: bool = True) -> None:
        self.page.get_by_role("button", name=name, exact=exact if isinstance(name, str) else None).first.click()
        if settle:
            self.settle()

    def upload(self, path: Path) -> None:
        self.page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
        self.page.get_by_text(Path(path).name).first.wait_for()
        self.settle()

    def expand(self, title_start: str) -> None:
        """Open a closed st.expander whose title starts with this text."""
        summary = self.page.locator('[data-testid="stExpander"] summary').filter(has_text=title_start).first
        details = summary.locator("xpath=..")
        if details.get_attribute("open") is None:
            summary.click()
            self.page.wait_for_timeout(300)

    def nav(self, title: str) -> None:
        """Go to a page through the sidebar navigation, as a person would."""
        self.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
        self.page.get_by_role("heading", name=title).first.wait_for()
        self.settle()

    def login(self, name: str, password: str) -> None:
        self.page.get_by_role("heading", name="Sign in").first.wait_for()
        self.close_dialog()
        self.fill("Name", name, commit=False)
        self.fill("Password", password, commit=False)
        self.click("Sign in")
        self.wait_text(f"Signed in as {name}")

    def close_dialog(self) -> None:
        """Close a modal such as Streamlit's 'Page not found' (it makes the page behind it inert)."""
        dialog = self.page.get_by_role("dialog")
        if dialog.count():
            self.page.keyboard.press("Escape")
            dialog.first.wait_for(state="hidden")

    def logout(self) -> None:
        self.page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
        self.page.get_by_role("heading", name="Sign in").first.wait_for()

    # ------------------------------------------------------------ checking and recording
    def check(self) -> None:
        """No exception box, no traceback, no error in the page's JavaScript."""
        exc = self.page.locator('[data-testid="stException"]')
        assert exc.count() == 0, exc.first.inner_text()
        assert "Traceback" not in self.body()
        assert not self.errors, self.errors

    def shot(self, name: str) -> Path:
        """A full screenshot of the page: Streamlit scrolls inside its main block, so the window is grown
        to the content first and put back afterwards."""
        self.check()
        self.page.mouse.move(self.width - 5, 5)  # no tooltip of the last button hovered
        self.shots += 1
        height = self.page.evaluate('document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
        self.page.set_viewport_size({"width": self.width, "height": min(max(height, self.height), 8000)})
        self.page.wait_for_timeout(400)  # charts re-lay out to the new size
        path = self.folder / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size({"width": self.width, "height": self.height})
        return path

    def close(self) -> None:
        self.context.close()


def grep_tree(folder: Path, needle: bytes) -> list[str]:
    """Files under folder whose bytes contain needle (the DuckDB file and its WAL included)."""
    hits = []
    for path in Path(folder).rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits
