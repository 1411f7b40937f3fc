"""Overhead of tracking (MLflow + TensorBoard, the default `report_to`) per training step, on the tiny CPU run.

    python bench/tracking_bench.py [--steps 160] [--pairs 2]

Two measurements:
  1. in the loop: what `Reporter.log` costs the training thread per step (the TensorBoard scalar writes and
     the MLflow queue put), timed over many calls on a real run folder, against the measured step time;
  2. end to end: the same tiny run with report_to none and with the default, alternated, comparing the mean
     step time over the second half of the steps (once the tracking process has imported MLflow and
     TensorBoard); noisy on a shared machine.
Fixed costs per run (MLflow import, schema creation on a fresh store, params, the adapter artifact at the end)
are printed apart: they are paid once per run, not per step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.trainers.test_trainer_fixtures import TINY, chat_records, write_records  # noqa: E402
from trainers import tracking  # noqa: E402
from trainers.config import TrainConfig, save_config  # noqa: E402


def tiny_run(root: Path, name: str, steps: int, report_to: str) -> tuple[Path, float, float]:
    """A tiny training run in a subprocess; returns (run_dir, mean step seconds, wall seconds)."""
    import subprocess

    run_dir = root / "runs" / name
    write_records(run_dir / "data" / "records.jsonl", chat_records(60))
    cfg = TrainConfig(**{**TINY, "tiny_dir": str(root / "models" / "tiny"), "max_steps": steps, "eval_every": 10,
                         "checkpoint_every": 1000, "report_to": report_to})
    save_config(cfg, run_dir / "config.json")
    (run_dir / "run.json").write_text(json.dumps({"dataset": "tickets", "version": 1, "content_hash": "x"}))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "trainers.train", str(run_dir)], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parents[1])
    wall = time.monotonic() - t0
    steps_ev = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
                if '"step"' in line and json.loads(line)["type"] == "step"]
    half = steps_ev[len(steps_ev) // 2:]  # the second half: after the tracking process has set up
    mean = (half[-1]["elapsed_s"] - half[0]["elapsed_s"]) / max(len(half) - 1, 1)
    return run_dir, mean, wall


def in_loop_cost(run_dir: Path, calls: int = 2000) -> tuple[float, float, float]:
    """(seconds per log call, seconds to create the reporter, seconds to close it) on a finished run folder."""
    cfg = TrainConfig(**{**TINY, "report_to": "mlflow,tensorboard"})
    t0 = time.perf_counter()
    rep = tracking.Reporter.create(cfg, run_dir)
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(calls):  # what one step logs: train loss and lr (an eval adds one more scalar)
        rep.log({"train/loss": 2.0 - i * 1e-4, "train/lr": 1e-4}, 10_000 + i)
    per_call = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    rep.close()
    return per_call, created, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    try:
        tiny_run(root, "warm", 2, "none")  # builds and caches the tiny base
        means = {"none": [], "mlflow,tensorboard": []}
        walls = {"none": [], "mlflow,tensorboard": []}
        for i in range(args.pairs):
            for report_to in means:
                _, mean, wall = tiny_run(root, f"{report_to.replace(',', '+')}-{i}", args.steps, report_to)
                means[report_to].append(mean)
                walls[report_to].append(wall)
        step_s = min(means["none"])
        run_dir = root / "runs" / "none-0"
        per_call, created, closed = in_loop_cost(run_dir)
        print(f"tiny CPU step (report_to none): {step_s * 1000:.1f} ms (runs: "
              f"{', '.join(f'{m * 1000:.1f}' for m in means['none'])} ms)")
        print(f"in the loop: Reporter.log per step {per_call * 1e6:.0f} us = {100 * per_call / step_s:.2f}% of a step")
        print("end to end, mean step over the second half of each run: none "
              f"{', '.join(f'{m * 1000:.1f}' for m in means['none'])} ms; default "
              f"{', '.join(f'{m * 1000:.1f}' for m in means['mlflow,tensorboard'])} ms")
        print(f"wall per run ({args.steps} steps): none {', '.join(f'{w:.1f}' for w in walls['none'])} s; default "
              f"{', '.join(f'{w:.1f}' for w in walls['mlflow,tensorboard'])} s")
        print(f"fixed per run: create reporter {created:.2f} s (the sinks start in their own process), close "
              f"{closed:.2f} s (waits for MLflow: {2000} points, final metrics, adapter artifact)")
        print(json.dumps({"step_ms": step_s * 1000, "log_us": per_call * 1e6, "log_pct": 100 * per_call / step_s,
                          "mean_step_ms": {k: [m * 1000 for m in v] for k, v in means.items()},
                          "wall_s": walls, "create_s": created, "close_s": closed}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
