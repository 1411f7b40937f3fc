"""The fast generation path on a GPU: `model.generate` with a static KV cache.

With `cache_implementation="static"` transformers compiles the decoding step with `torch.compile`
(mode reduce-overhead: CUDA graphs), so one new token for the whole batch costs a graph replay
instead of hundreds of kernel launches from Python. Greedy decoding stays `generate`'s own loop
(same logits processors, stopping and padding), so the tokens are greedy generate's.

A compiled step is specialised to the cache shape (batch x (prompt width + new tokens)), so prompt
widths are rounded up to a multiple of `WIDTH_BUCKET` on a GPU: batches of similar prompts reuse
one compiled graph. On a CPU nothing changes (no static cache, prompts padded to the longest).
WORKBENCH_STATIC_CACHE=0 turns the static cache off.
"""

from __future__ import annotations

import os

import torch

WIDTH_BUCKET = 64


def enabled(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("WORKBENCH_STATIC_CACHE", "1") not in ("0", "false", "no")


def prompt_width(longest: int, device: torch.device) -> int:
    """The padded prompt width of a batch: the longest prompt, rounded up to a bucket on a GPU."""
    if not enabled(device):
        return longest
    return max(WIDTH_BUCKET, -(-longest // WIDTH_BUCKET) * WIDTH_BUCKET)


def generate_kwargs(device: torch.device) -> dict:
    """Extra `model.generate` arguments: the static (compiled) KV cache on a GPU, nothing on a CPU."""
    return {"cache_implementation": "static"} if enabled(device) else {}
