"""Shared by the trainer tests: small demo chat records and a 2-layer, 64-wide tiny model config."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.config import TrainConfig
from workbench.data.demo import generate_tickets

# Small enough that a step takes milliseconds on one CPU thread.
TINY = dict(tiny_layers=2, tiny_width=64, tiny_heads=2, tiny_vocab=400, tiny_pretrain_steps=10, batch_tokens=1024,
            max_seq_len=512, cpu_threads=1, warmup_steps=0, eval_every=5, checkpoint_every=5, max_val_records=16,
            report_to="none")  # tracking has its own tests (tests/trainers/test_tracking.py); the e2e runs keep it on


def chat_records(n: int, seed: int = 7) -> list[dict]:
    return [{"messages": [{"role": "user", "content": t["prompt"]}, {"role": "assistant", "content": t["completion"]}],
             "id": t["id"], "category": t["category"]} for t in generate_tickets(n, seed=seed)]


def write_records(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "tiny_dir": str(tmp_path / "models" / "tiny"), **overrides})


def one_thread():
    """Small torch ops slow down many times when two threads fight other processes for two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before
