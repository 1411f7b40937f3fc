"""The GPU benchmarks of issue 15 run on a CPU in their --tiny dry-run form, so a change that breaks them shows
here and not on the lent GPU: `bench/product_gpu.py --cli` drives the real commands (import, train, eval) on a
DuckDB project; `bench/families_gpu.py` trains and evaluates a Llama-family folder with its own template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _lines(cmd: list[str], out: Path) -> list[dict]:
    done = subprocess.run([sys.executable, *cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(x) for x in (out / "product.jsonl").read_text().splitlines()]


def test_product_gpu_dry_run_drives_the_commands(tmp_path):
    rows = {r.get("phase"): r for r in _lines(["bench/product_gpu.py", "--tiny", "--cli"], tmp_path / "p")}
    assert rows["workbench import"]["exit"] == 0
    train = rows["workbench train (the command)"]
    assert train["exit"] == 0 and train["status"] == "completed" and train["steps"] == 6, train
    assert train["steady_supervised_tokens_per_s"] > 0 and train["model_tflops_per_s"] is not None
    assert train["plan"] == ["max_seq_len 512: the CPU default", "batch_tokens 2048: the CPU default"]
    ev = rows["workbench eval (the command)"]
    assert ev["exit"] == 0 and ev["status"] == "finished" and ev["generated"] == ev["items"] == 12, ev
    assert ev["generator"]["new_tokens"] > 0 and ev["settings"]["max_new_tokens"] == 16


def test_families_gpu_dry_run_trains_and_evaluates_a_llama(tmp_path):
    rows = _lines(["bench/families_gpu.py", "--tiny", "--families", "llama", "--methods", ""], tmp_path / "f")
    train, ev = rows[1], rows[2]
    assert train["family"] == "llama" and train["status"] == "completed" and train["steps"] == 4, train
    assert ev["exit"] == 0 and ev["items"] == 8 and ev["new_tokens"] > 0, ev
