"""Generating an evaluation's answers: the generator (`python -m trainers.eval_generate`) as a job
(workbench.core.jobs), followed until every test item has an answer, then scored.

The generator never opens the store: it appends to the run folder's `outputs.jsonl`, and `refresh`
(called by the Evaluate page every second and by the CLI's wait loop) ingests what it wrote and
moves the run on: running -> generated -> finished, or stopped / failed when the process ended early.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sys
import threading
import time
from pathlib import Path

from workbench.core import jobs
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import Version
from workbench.models.eval_scores import AnswersAhead, prepare, score
from workbench.models.eval_setup import GenerationSettings, ModelSpec
from workbench.models.evaluation import (
    CONFIG_FILE,
    DONE_FILE,
    LOG_FILE,
    OUTPUTS_FILE,
    EvalRun,
    Progress,
    create_eval,
    get_eval,
    ingest,
    output_lines,
    require,
    update_eval,
)

GENERATOR_MODULE = "trainers.eval_generate"
JOB_FILE = "job.json"  # the generator's pid and start time (a reused pid is not taken for it)


def generator_command(run: EvalRun) -> list[str]:
    return [sys.executable, "-m", GENERATOR_MODULE, str(Path(run.folder) / CONFIG_FILE)]


def _job(run: EvalRun) -> jobs.Job | None:
    if not run.pid:
        return None
    try:
        job = jobs.Job.from_text((run.path / JOB_FILE).read_text(encoding="utf-8"))
    except OSError:
        job = None
    return job if job is not None and job.pid == run.pid else jobs.Job(run.pid)


def launch(store: Store, eval_id: int, *, user=None) -> EvalRun:
    """Start (or resume) generation as a job; returns at once. Items already generated are skipped."""
    require(user)
    run = get_eval(store, eval_id)
    if run.status == "running" and jobs.alive(_job(run)):
        raise WorkbenchError(f"evaluation {eval_id} is already generating (process {run.pid})")
    if run.status == "finished":
        raise WorkbenchError(f"evaluation {eval_id} has finished; start a new one to generate again")
    (run.path / DONE_FILE).unlink(missing_ok=True)
    job = jobs.start(generator_command(run), cwd=run.folder, log=run.path / LOG_FILE)
    (run.path / JOB_FILE).write_text(json.dumps(job.to_dict()), encoding="utf-8")
    update_eval(store, eval_id, status="running", pid=job.pid, error=None)
    return get_eval(store, eval_id)


def stop(store: Store, eval_id: int, *, user=None) -> EvalRun:
    """Stop generating; what was generated stays (resume with `launch`)."""
    require(user)
    run = get_eval(store, eval_id)
    if run.status == "running":
        jobs.stop(_job(run))
    ingest(store, eval_id)
    update_eval(store, eval_id, status="stopped", pid=None)
    return get_eval(store, eval_id)


def refresh(store: Store, eval_id: int, *, ahead: AnswersAhead | None = None) -> EvalRun:
    """Ingest new outputs and move the run's status on: generated -> scored, or stopped/failed.

    Safe to call as often as a page likes; it is how a page or the CLI follows a run."""
    run = get_eval(store, eval_id)
    if run.status in ("finished", "failed"):
        return run
    ingest(store, eval_id)
    run = get_eval(store, eval_id)
    done_marker = (run.path / DONE_FILE).exists()
    if run.generated >= run.items:
        if run.status != "generated":
            update_eval(store, eval_id, status="generated", pid=None)
        return score(store, eval_id, ahead=None if ahead is None else ahead.stats)
    job = _job(run)
    if run.status == "running" and not jobs.alive(job):
        ingest(store, eval_id)  # the last batch may have landed after the check above
        run = get_eval(store, eval_id)
        if run.generated >= run.items:
            return refresh(store, eval_id, ahead=ahead)
        code = jobs.reap(job)  # None: started by another process (its exit code is not ours to read)
        error = _log_tail(run) if (code not in (0, None) or not done_marker) else None
        update_eval(store, eval_id, status="failed" if code not in (0, None, -signal.SIGTERM) else "stopped",
                    pid=None, error=error)
        run = get_eval(store, eval_id)
    return run


def _log_tail(run: EvalRun, lines: int = 6) -> str | None:
    try:
        text = (run.path / LOG_FILE).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return None
    interesting = [ln for ln in text if ln.strip()][-lines:]
    return "\n".join(interesting) or None


def wait(store: Store, eval_id: int, *, progress: Progress | None = None, poll_s: float = 0.5,
         ahead: AnswersAhead | None = None) -> EvalRun:
    """Follow a launched run until it ends (the CLI's loop); Ctrl-C stops generation and keeps the outputs.
    `ahead`: statistics computed while following the generator (follow_job), reused by the scoring."""
    try:
        while True:
            run = refresh(store, eval_id, ahead=ahead)
            if progress:
                progress(min(run.fraction, 0.999) if run.status == "running" else run.fraction,
                         f"{run.generated:,}/{run.items:,} answers")
            if run.status not in ("running", "generated", "created"):
                return run
            time.sleep(poll_s)
    except KeyboardInterrupt:
        stop(store, eval_id)
        raise


def run_eval(store: Store, version: Version | str, *, model: ModelSpec, split: str = "test",
             settings: GenerationSettings | dict | None = None, user=None,
             progress: Progress | None = None) -> EvalRun:
    """Create, generate (a job) and score in one blocking call, holding the store throughout (for scripts;
    `workbench eval` closes the store while the generator runs: see follow_job)."""
    run = create_eval(store, version, model=model, split=split, settings=settings, user=user)
    launch(store, run.eval_id, user=user)
    return wait(store, run.eval_id, progress=progress)


def restart(store: Store, eval_id: int, *, user=None) -> EvalRun:
    """Continue a stopped or crashed run: re-ingest the whole file, launch the generator for what is missing
    (nothing when every answer is there: the run is scored and returned finished)."""
    ingest(store, eval_id, from_start=True)
    run = refresh(store, eval_id)
    if run.status == "finished":
        return run
    return launch(store, eval_id, user=user)


def resume(store: Store, eval_id: int, *, user=None, progress: Progress | None = None) -> EvalRun:
    """restart, then wait until it is scored."""
    run = restart(store, eval_id, user=user)
    return run if run.status == "finished" else wait(store, eval_id, progress=progress)


_SPEED = re.compile(rb"answered, ([\d,]+) new tokens/s")


def generation_speed(run: EvalRun) -> float | None:
    """The generator's latest new-tokens-per-second figure, read from the end of its log (None before the first
    batch)."""
    try:
        with open(run.path / LOG_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            found = _SPEED.findall(f.read())
    except OSError:
        return None
    return float(found[-1].replace(b",", b"")) if found else None


def follow_job(run: EvalRun, *, progress: Progress | None = None, poll_s: float = 0.5,
               ahead: AnswersAhead | None = None) -> None:
    """Follow a launched generator by its files alone, with no store open, until its process ends: the CLI's
    loop, so the app can open the project while a long evaluation generates. Ctrl-C stops the generator (what
    it wrote stays; the caller records the stop). Meanwhile a low-priority thread readies the scoring: its
    imports and stores (eval_scores.prepare), and the statistics of each batch of answers as it lands (`ahead`,
    from eval_scores.answers_ahead, then given to `wait`); on a busy CPU the generator goes first."""
    job, path = _job(run), run.path / OUTPUTS_FILE
    offset, lines = 0, 0
    chunks: queue.SimpleQueue = queue.SimpleQueue()

    def ready() -> None:
        _lower_this_threads_priority()
        prepare(run)
        while (chunk := chunks.get()) is not None and ahead is not None:
            try:
                ahead.add(*output_lines(chunk, run.items))
            except Exception:  # noqa: BLE001 - scoring computes what is missing and reports its own errors
                return

    worker = threading.Thread(target=ready, name=f"eval-{run.eval_id}-ready", daemon=True)
    worker.start()
    try:
        while True:
            alive = jobs.alive(job)  # read once more after it ends: its last batch
            if (progress is not None or ahead is not None) and path.exists():
                with open(path, "rb") as f:  # the complete lines written since the last look
                    f.seek(offset)
                    chunk = f.read()
                end = chunk.rfind(b"\n") + 1
                lines, offset = lines + chunk[:end].count(b"\n"), offset + end
                if ahead is not None and end:
                    chunks.put(chunk[:end])
                done = min(lines, run.items)
                speed = generation_speed(run)
                if progress is not None:
                    progress(min(done / max(run.items, 1), 0.999),
                             f"{done:,}/{run.items:,} answers" + (f" · {speed:,.0f} new tokens/s" if speed else ""))
            if not alive:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        jobs.stop(job)
        raise
    chunks.put(None)
    worker.join()  # what is left of it runs now at full speed: the generator has ended


def _lower_this_threads_priority() -> None:
    """Nice the calling thread by 10 (Linux gives each thread its own nice value); elsewhere nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):
        pass
