"""Model FLOPs utilisation (MFU): the matrix FLOPs a training step needs, over what the GPU can do.

A step's model FLOPs are counted from the model as loaded (what `count` finds) and the step's
token counts, the usual way (PaLM, appendix B) adapted to adapters on a frozen base:

* a frozen linear layer costs 2 FLOPs per weight per token forward and 2 more backward (the gradient
  of its input only): 4 x weights x tokens;
* a trained linear layer (LoRA's A and B) also gets its weight gradient: 6 x weights x tokens;
* the output layer (vocabulary x hidden) runs only where a token carries a loss: 4 x weights x
  supervised tokens (the fast loss computes no other logits, and no other logits are needed);
* attention scores and values: 4 x layers x (heads x head size) per attended query-key pair forward,
  8 backward; a causal example of n tokens has n(n + 1) / 2 pairs (packed examples see only
  themselves).

Recomputation (gradient checkpointing), norms, activations and the optimizer are not counted, so MFU
is what the model needs, not what the GPU happened to do. `peak_flops` knows the dense bf16 peak of
common data-centre GPUs; elsewhere MFU is left out (set WORKBENCH_PEAK_TFLOPS to give the peak).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# Dense (not sparse) bf16 tensor-core peak per GPU, from NVIDIA's data sheets; the first name found
# in the device name wins, so the longer names come first.
PEAK_BF16 = (("GH200", 989e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
             ("H100", 989e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))


@dataclass(frozen=True)
class ModelCounts:
    frozen: int  # weights of frozen linear layers (not the output layer)
    trained: int  # weights of trained linear layers (the adapter's)
    output: int  # weights of the output layer
    attention: int  # layers x heads x head size

    def step_flops(self, tokens: int, supervised: int, pairs: int) -> float:
        return float(4 * self.frozen * tokens + 6 * self.trained * tokens + 4 * self.output * supervised
                     + 12 * self.attention * pairs)


def count(model: torch.nn.Module) -> ModelCounts:
    """The linear layers of a (peft-wrapped, possibly 4-bit) causal LM, frozen and trained apart."""
    out_layer = model.get_output_embeddings()
    frozen = trained = 0
    for module in model.modules():
        if module is out_layer or next(module.children(), None) is not None:
            continue
        n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
        weight = getattr(module, "weight", None)
        if not isinstance(n_in, int) or not isinstance(n_out, int) or weight is None:
            continue
        if weight.requires_grad:
            trained += n_in * n_out
        else:
            frozen += n_in * n_out
    output = out_layer.in_features * out_layer.out_features if out_layer is not None else 0
    config = model.config
    heads = getattr(config, "num_attention_heads", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0)
    layers = getattr(config, "num_hidden_layers", 0) or 0
    return ModelCounts(frozen, trained, output, layers * heads * head_dim)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense bf16/fp16 peak in FLOP/s, or None where it is not known (CPU, fp32, other GPUs)."""
    if os.environ.get("WORKBENCH_PEAK_TFLOPS"):
        return float(os.environ["WORKBENCH_PEAK_TFLOPS"]) * 1e12
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)

