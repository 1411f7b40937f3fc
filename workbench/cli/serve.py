"""Start the Streamlit app in a subprocess, so the core library never imports streamlit."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.project import open_project

APP = Path(__file__).resolve().parents[2] / "pages" / "app.py"


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


def serve(project_dir=None, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    project = open_project(project_dir)
    if not is_loopback(host):
        # Without accounts the app is one local user who may do everything: refuse to offer that to a network.
        if not project_has_users(project):
            raise WorkbenchError(
                f"refusing to serve on {host} without accounts: anyone who could reach port {port} could read and "
                "change this project. Add an admin first (`workbench users add NAME --role admin`), or serve on "
                "127.0.0.1")
        print(f"note: serving on {host} with sign-in; passwords travel as plain HTTP unless a TLS proxy sits in "
              "front of the app", file=sys.stderr)
    env = dict(os.environ, WORKBENCH_PROJECT=str(project.root))
    print(f"Workbench on http://{host}:{port} (project {project.root}); Ctrl+C stops it", file=sys.stderr)
    try:
        return subprocess.call(streamlit_command(host, port), env=env)
    except KeyboardInterrupt:
        return 0
