"""Start the Streamlit app in a subprocess, so the core library never imports streamlit.

The server runs as a job (workbench.core.jobs) in its own process group; when `workbench serve`
is stopped (Ctrl+C, SIGTERM from a service manager, SIGHUP when its terminal closes) it stops the
whole server, so nothing is left holding the project's database.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
from pathlib import Path

from workbench.cli import remote
from workbench.core import jobs
from workbench.core.auth import allowed_host_names
from workbench.core.errors import WorkbenchError
from workbench.core.project import open_project

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]


def project_has_users(project) -> bool:
    from workbench.core.auth import has_users
    from workbench.core.store import Store

    with Store(project) as store:
        return has_users(store)


def check_exposure(project, host: str, port: int) -> None:
    """Refuse to offer a project without accounts to a network (without accounts the app is one local
    user who may do everything); warn that sign-in travels as plain HTTP."""
    if is_loopback(host):
        return
    if not project_has_users(project):
        raise WorkbenchError(
            f"refusing to serve on {host} without accounts: anyone who could reach port {port} could read and "
            "change this project. Add an admin first (`workbench users add NAME --role admin`), or serve on "
            "127.0.0.1")
    print(f"note: serving on {host} with sign-in; passwords travel as plain HTTP unless a TLS proxy sits in "
          "front of the app", file=sys.stderr)


def _local_address(host: str) -> str:
    """How a command on this machine reaches a server bound to host."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class _Stopped(Exception):
    """A stop signal arrived while the server ran."""


def _raise_stopped(signum, frame) -> None:
    raise _Stopped(signum)


def serve(project_dir=None, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    project = open_project(project_dir)
    check_exposure(project, host, port)
    print(f"Workbench on http://{host}:{port} (project {project.root}); Ctrl+C stops it", file=sys.stderr)
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)
    job = None
    token = remote.new_token()
    try:
        job = jobs.start(streamlit_command(host, port), tied=True, env={
            "WORKBENCH_PROJECT": str(project.root), remote.TOKEN_ENV: token,
            # only these Host headers reach the app (DNS rebinding): see auth.allowed_host_names
            "STREAMLIT_SERVER_ALLOWED_HOSTS": " ".join(allowed_host_names(
                host, project.setting("server", "allowed_hosts", [])))})  # tied: dies with this process
        # CLI commands on this project are handed to the app from now on (cli/remote.py)
        remote.advertise(project.root, url=f"http://{_local_address(host)}:{port}", token=token, job=job)
        code = jobs.wait(job)
        return code or 0
    except (_Stopped, KeyboardInterrupt):
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second signal now would cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if job is not None:
            remote.withdraw(project.root)
            jobs.stop(job)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
