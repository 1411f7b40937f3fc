"""The one job runner (workbench.core.jobs): real subprocesses, checked with psutil."""

from __future__ import annotations

import os
import sys
import time

import psutil

from workbench.core import jobs

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# a parent that starts a grandchild and ignores SIGTERM: only SIGKILL after the grace period ends it
STUBBORN = [sys.executable, "-c",
            "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); print('ready', flush=True); "
            "time.sleep(120)"]


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_a_started_job_runs_in_its_own_session_with_the_job_environment(tmp_path):
    log = tmp_path / "job.log"
    code = ("import os; print(os.getsid(0) == os.getpid(), os.environ['HF_HUB_OFFLINE'], "
            "os.environ['TOKENIZERS_PARALLELISM'], os.environ['PYTHONUNBUFFERED']); import trainers")
    job = jobs.start([sys.executable, "-c", code], cwd=tmp_path, log=log)
    assert jobs.wait(job, timeout=60) == 0
    assert log.read_text().split() == ["True", "1", "false", "1"]  # and `import trainers` resolved from tmp_path
    assert not jobs.alive(job)


def test_an_exited_child_is_reaped_with_its_exit_code(tmp_path):
    job = jobs.start([sys.executable, "-c", "raise SystemExit(3)"], cwd=tmp_path)
    assert _wait_until(lambda: psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE)
    assert not jobs.alive(job)  # a zombie is not alive
    assert jobs.reap(job) == 3
    assert not psutil.pid_exists(job.pid)  # no zombie left behind
    assert jobs.reap(job) is None


def test_a_reused_pid_is_not_taken_for_the_job():
    me = jobs.current()
    assert jobs.alive(me)
    assert not jobs.alive(jobs.Job(me.pid, me.create_time - 5.0))  # same pid, another process's start time
    assert jobs.Job.from_text(me.to_text()) == me
    assert jobs.Job.from_text(str(os.getpid())) == jobs.Job(os.getpid(), None)  # the older lock-file form


def test_stop_ends_the_whole_tree_and_kills_what_ignores_sigterm(tmp_path):
    log = tmp_path / "out.log"
    job = jobs.start(STUBBORN, cwd=tmp_path, log=log)
    assert _wait_until(lambda: "ready" in log.read_text())
    tree = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    assert len(tree) == 2
    code = jobs.stop(job, grace_s=1.0)
    assert code == -9  # SIGTERM was ignored; SIGKILL ended it
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not psutil.pid_exists(job.pid)  # reaped


def test_stop_of_a_job_that_ended_long_ago_does_nothing(tmp_path):
    job = jobs.start(SLEEPER, cwd=tmp_path)
    assert jobs.stop(job, grace_s=5.0) == -15
    assert jobs.stop(job) is None and not jobs.alive(job)


def test_the_tiny_base_lock_names_its_holder_by_pid_and_start_time(tmp_path):
    from trainers import tiny

    lock = tmp_path / "tiny.lock"
    holder = jobs.start(SLEEPER, cwd=tmp_path)
    try:
        lock.write_text(holder.to_text())
        assert tiny._holder_alive(lock)  # another process builds the base: wait for it
        lock.write_text(jobs.Job(holder.pid, holder.create_time - 5.0).to_text())
        assert not tiny._holder_alive(lock)  # the pid now belongs to a process that started later: stale
    finally:
        jobs.stop(holder, grace_s=5.0)
    lock.write_text(holder.to_text())
    assert not tiny._holder_alive(lock)  # the holder has ended


def test_a_tied_job_dies_with_its_parent_even_by_sigkill(tmp_path):
    """`workbench serve` starts Streamlit tied: a SIGKILL of the command must not leave the server running."""
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from workbench.core import jobs\n"
        "job = jobs.start([sys.executable, '-c', 'import time; time.sleep(120)'], tied=True)\n"
        "print(job.pid, job.create_time, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True, env=jobs.job_env())
    pid, created = parent.stdout.readline().split()
    child = jobs.Job(int(pid), float(created))
    assert jobs.alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while jobs.alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not jobs.alive(child)
