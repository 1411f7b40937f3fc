"""The fast training path on a GPU: a supervised-only, chunked cross-entropy and compiled decoder layers.

`train.loss_sum` calls `loss_sum` here when the batch is on a CUDA device. It returns the same
number as the plain path (the summed cross-entropy over the supervised tokens), computed so that
the 151,936-wide logits of a Qwen-sized vocabulary are never built for the whole batch:

1. the model runs as usual, through its top-level forward (so DDP's hooks see it), but a forward
   pre-hook on the output layer takes the final hidden states and hands the output layer only one
   position per row (the model's own logits are not used);
2. only the hidden states at supervised positions are kept (about half of a support-ticket batch);
3. `SupervisedCrossEntropy` runs the output layer and the cross-entropy chunk by chunk and works out
   the gradient of the hidden states (and of the output weight, when it trains) in the same pass,
   so at most one chunk of logits exists at a time, forward or backward (the method of Liger
   Kernel's fused linear cross-entropy, in plain PyTorch).

The logits of each chunk are computed in the model's dtype and upcast to float32 before the
softmax, exactly as the plain path's `logits.float()` does.

`compile_layers` compiles each decoder layer with `torch.compile` (regional compilation: the
layers share one compiled graph). Packed rows are padded to a multiple of `PAD_MULTIPLE` on the
GPU so that compiled shapes repeat; the padding is its own sequence with no labels.
"""

from __future__ import annotations

import os

import torch

IGNORE = -100
CHUNK_ROWS = 2048  # logits of one chunk: 2048 x 151,936 float32 = 1.2 GB
PAD_MULTIPLE = 256


class SupervisedCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W.T, y_i) over the rows of h, chunk by chunk, with the gradients made in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, need_grad_hidden, need_grad_weight):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.promote_types(weight.dtype, torch.float32),
                                                device=weight.device) if need_grad_weight else None
        compute = torch.get_autocast_dtype("cuda") if hidden.is_cuda and torch.is_autocast_enabled("cuda") else None
        w = weight.to(compute) if compute is not None else weight
        wide = torch.promote_types(w.dtype, torch.float32)
        for lo in range(0, hidden.shape[0], chunk_rows):
            h = hidden[lo: lo + chunk_rows].to(w.dtype)
            y = targets[lo: lo + chunk_rows]
            logits = (h @ w.t()).to(wide)  # as the plain path: logits in the model dtype, upcast for the softmax
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            probs[torch.arange(y.shape[0], device=y.device), y] -= 1.0  # d CE / d logits
            g = probs.to(w.dtype)
            if grad_hidden is not None:
                grad_hidden[lo: lo + chunk_rows] = (g @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += g.t() @ h
        ctx.save_for_backward(*(t for t in (grad_hidden, grad_weight) if t is not None))
        ctx.has = (grad_hidden is not None, grad_weight is not None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_hidden = grad_weight = None
        if ctx.has[0]:
            g = saved.pop(0)
            # scaled in float32 at least: the caller's 1/n in bf16 would be off by up to 0.4%
            grad_hidden = (g.to(torch.promote_types(g.dtype, torch.float32)) * grad_out).to(g.dtype)
        if ctx.has[1]:
            grad_weight = (saved.pop(0) * grad_out).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None


def supervised_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` against `targets` (no ignored entries), float32."""
    grad = torch.is_grad_enabled()
    return SupervisedCrossEntropy.apply(hidden, weight, targets, chunk_rows, grad and hidden.requires_grad,
                                        grad and weight.requires_grad)


def _unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def supports(model) -> bool:
    """The fast loss needs a plain output layer (weight, no bias) called with the final hidden states."""
    m = _unwrap(model)
    if getattr(getattr(m, "peft_config", {}).get("default", None), "is_prompt_learning", False):
        return False  # prompt and prefix tuning change the sequence; the plain path handles them
    head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
    return type(head) is torch.nn.Linear and head.bias is None


def pad_packed(batch: dict, multiple: int = PAD_MULTIPLE) -> dict:
    """Packed rows (no attention mask) padded on the right to a multiple of `multiple` tokens; the padding
    continues as its own sequence (positions from 0, labels ignored), as `data.collate` pads."""
    if "attention_mask" in batch:
        return batch
    width = batch["input_ids"].shape[1]
    extra = -width % multiple
    if not extra:
        return batch
    rows = batch["input_ids"].shape[0]
    pad_id = 0  # any token: the padding is its own sequence and carries no label
    out = dict(batch)
    dev = batch["input_ids"].device
    out["input_ids"] = torch.cat([batch["input_ids"], torch.full((rows, extra), pad_id, device=dev,
                                                                 dtype=batch["input_ids"].dtype)], 1)
    out["labels"] = torch.cat([batch["labels"], torch.full((rows, extra), IGNORE, device=dev,
                                                           dtype=batch["labels"].dtype)], 1)
    out["position_ids"] = torch.cat([batch["position_ids"], torch.arange(extra, device=dev).expand(rows, extra)], 1)
    return out


def loss_sum(model, batch: dict, *, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy over the supervised tokens of a batch (float32), logits only where supervised.

    Equal to `train.loss_sum`'s plain path (tests/trainers/test_fastloss.py checks it against the full logits).
    """
    m = _unwrap(model)
    head = m.get_output_embeddings()
    if batch["input_ids"].is_cuda:
        batch = pad_packed(batch)
    captured = {}

    def take_hidden(module, args):
        captured["hidden"] = args[0]
        return (args[0][:, -1:],)  # the model's own logits: one position per row, unused

    handle = head.register_forward_pre_hook(take_hidden)
    try:
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}
        if "attention_mask" in batch:
            inputs["attention_mask"] = batch["attention_mask"]
        else:
            inputs["position_ids"] = batch["position_ids"]  # packed rows: restarting positions separate examples
        model(**inputs)
    finally:
        handle.remove()
    hidden = captured["hidden"]
    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    selected = hidden[:, :-1][keep]
    return supervised_cross_entropy(selected, head.weight, targets[keep], chunk_rows)


def compile_enabled() -> bool:
    return os.environ.get("WORKBENCH_COMPILE", "1") not in ("0", "false", "no")


def compile_layers(model) -> int:
    """torch.compile each decoder layer (the repeated blocks in the model's `layers` list); returns how many."""
    n = 0
    for name, module in _unwrap(model).named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h") and len(module):
            for layer in module:
                layer.compile()
                n += 1
    return n


def prepare(model, cfg, device: torch.device) -> int:
    """The GPU speed-ups that change the model: compiled decoder layers for LoRA without gradient
    checkpointing (WORKBENCH_COMPILE=0 turns it off). Nothing on a CPU. Returns the layers compiled."""
    if device.type != "cuda" or cfg.method != "lora" or cfg.gradient_checkpointing or not compile_enabled():
        return 0
    return compile_layers(model)
