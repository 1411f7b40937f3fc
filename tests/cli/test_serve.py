"""`workbench serve` stopped by a signal stops the whole Streamlit server (workbench.cli.serve, workbench.core.jobs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from tests.e2e.e2e_helpers import ROOT, free_port
from workbench.core.store import Store


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_serve_leaves_no_streamlit_behind(tmp_path, sig):
    project = tmp_path / "p"
    Store.open(project).close()
    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--project", str(project), "--port",
                            str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    server = []
    try:
        deadline = time.monotonic() + 120
        while not _healthy(f"http://127.0.0.1:{port}/_stcore/health"):
            assert cli.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.25)
        server = psutil.Process(cli.pid).children(recursive=True)
        assert any("streamlit" in " ".join(p.cmdline()) for p in server)
        os.kill(cli.pid, sig)  # the workbench process only, as a service manager or a closed terminal does
        cli.wait(timeout=60)
        _, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
        assert not _healthy(f"http://127.0.0.1:{port}/_stcore/health")
        Store.open(project).close()  # nothing holds the database any more
    finally:
        for p in [*server, psutil.Process(cli.pid)] if cli.poll() is None else server:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        cli.wait(timeout=30)
