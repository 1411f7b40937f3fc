"""Start the Streamlit app in a subprocess, so the core library never imports streamlit."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from workbench.project import open_project

APP = Path(__file__).resolve().parent.parent / "pages" / "app.py"


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


def serve(project_dir=None, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    project = open_project(project_dir)
    if not is_loopback(host):
        print(f"warning: serving on {host} without accounts: anyone who can reach port {port} can read and "
              "change this project. Bind to 127.0.0.1 unless you mean it.", file=sys.stderr)
    env = dict(os.environ, WORKBENCH_PROJECT=str(project.root))
    print(f"Workbench on http://{host}:{port} (project {project.root}); Ctrl+C stops it", file=sys.stderr)
    try:
        return subprocess.call(streamlit_command(host, port), env=env)
    except KeyboardInterrupt:
        return 0
