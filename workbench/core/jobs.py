"""The one job runner: every subprocess Workbench starts (training runs, evaluation generators, the
Streamlit server) is started, checked, stopped and reaped here.

A job is known by its pid *and* the process's start time (psutil's `create_time`), so a pid the
system handed to some other process after ours ended is never taken for our job. Jobs run in their
own session and process group: closing the browser or the terminal does not stop a training run,
and stopping a job stops every process it started. Callers keep the `Job` (or its `to_dict()`) in
their own records (run.json, the eval folder); nothing here holds a registry of processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]  # trainers/ and pages/ sit beside workbench/
GRACE_S = 10.0  # how long a job may take to stop after SIGTERM before it is killed
_SAME_START_S = 0.01  # create_time is read from /proc in clock ticks: equal for the same process


@dataclass(frozen=True)
class Job:
    pid: int
    create_time: float | None = None
    """When the process started (psutil); None for a record written before start times were kept."""

    def to_dict(self) -> dict:
        return {"pid": self.pid, "create_time": self.create_time}

    @classmethod
    def from_dict(cls, values: dict | None) -> Job | None:
        if not values or not values.get("pid"):
            return None
        return cls(int(values["pid"]), values.get("create_time"))

    @classmethod
    def from_text(cls, text: str) -> Job | None:
        """A job written by `to_text` (or a bare pid, the older form); None when unreadable."""
        text = (text or "").strip()
        try:
            return cls.from_dict(json.loads(text)) if text.startswith("{") else cls.from_dict({"pid": int(text)})
        except (ValueError, TypeError):
            return None

    def to_text(self) -> str:
        return json.dumps(self.to_dict())


def job_env(extra: dict | None = None) -> dict:
    """The environment of every job: the repository root on PYTHONPATH (so `-m trainers...` resolves
    from any working directory), offline Hugging Face, quiet tokenizers, unbuffered output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def start(cmd: list[str], *, cwd=None, log: Path | None = None, env: dict | None = None, tied: bool = False) -> Job:
    """Start cmd in its own session and process group; output appended to `log` (None: this terminal).

    tied=True keeps the child in this process's group (a terminal's Ctrl+C and a kill of the group reach
    it) and, on Linux, has the kernel kill it when this process dies, even by SIGKILL: for a server that
    must never outlive the command that started it."""
    out = open(log, "ab") if log is not None else None
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                                stdin=subprocess.DEVNULL, cwd=cwd, env=job_env(env), start_new_session=not tied,
                                preexec_fn=_die_with_parent if tied and sys.platform == "linux" else None)
    finally:
        if out is not None:
            out.close()
    # The job is followed by pid from here on (alive/reap below), possibly by another process; mark the
    # Popen as settled so that dropping it neither warns nor lets the stdlib reap the child and lose its code.
    proc.returncode = 0
    return Job(proc.pid, _create_time(proc.pid))


def _die_with_parent() -> None:
    """In the child, before exec: ask the kernel for SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def current() -> Job:
    """This process as a job (for lock files)."""
    return Job(os.getpid(), _create_time(os.getpid()))


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _process(job: Job | None) -> psutil.Process | None:
    """The live process of this job, or None (gone, or its pid now belongs to another process)."""
    if job is None or not job.pid:
        return None
    try:
        proc = psutil.Process(job.pid)
        if job.create_time is not None and abs(proc.create_time() - job.create_time) > _SAME_START_S:
            return None
        return proc
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # someone else's process with our pid: not ours
        return None


def alive(job: Job | None) -> bool:
    """True while the job's process runs (an exited child not yet reaped is not alive)."""
    proc = _process(job)
    if proc is None:
        return False
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap(job: Job | None) -> int | None:
    """Collect an exited child of this process so it does not linger as a zombie; returns its exit
    code (negative: the signal that ended it), or None when it runs, is not our child or was reaped."""
    if job is None or not job.pid or (job.create_time is not None and _process(job) is None):
        return None
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if pid else None


def wait(job: Job, timeout: float | None = None) -> int | None:
    """Block until the job ends (at most timeout seconds); its exit code when it was our child (None:
    not our child, or still running after timeout)."""
    proc = _process(job)
    if proc is None:
        return reap(job)
    try:
        return proc.wait(timeout)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        return None


def stop(job: Job | None, *, grace_s: float = GRACE_S) -> int | None:
    """Stop the job and every process it started: SIGTERM to the tree, SIGKILL to what is left after
    grace_s; reaped. Returns the exit code when the job was our child."""
    proc = _process(job)
    if job is None or proc is None:  # _process gives None for no job; this tells mypy too
        return reap(job)
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = [proc]
    _signal_group(job.pid, signal.SIGTERM)
    for p in tree:
        _send(p, signal.SIGTERM)
    _, left = psutil.wait_procs(tree, timeout=grace_s)  # reaps those that are our children
    for p in left:
        _send(p, signal.SIGKILL)
    psutil.wait_procs(left, timeout=grace_s)
    return getattr(proc, "returncode", None)  # set by wait_procs for a child it reaped


def _signal_group(pid: int, sig: int) -> None:
    """The job leads its own process group (start_new_session): signal all of it at once."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _send(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
