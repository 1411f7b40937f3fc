"""More than one process under torchrun: DDP or FSDP2 around the peft model, and the state that leaves it.

`choose` picks how the ranks share the work (config `fsdp`: auto, on, off). DDP keeps a whole model
on every rank and averages gradients. FSDP2 (`torch.distributed.fsdp.fully_shard`, per decoder layer,
then the root) keeps 1/N of every weight on each rank, the frozen base included, and gathers a layer's
weights only while that layer runs; the LoRA weights are the only trainable ones. Gradients are
averaged across ranks by both (reduce-scatter for FSDP), so the recipe's loss scaling is the same.

Everything that leaves the model is plain: `adapter_state` gathers the trainable (adapter) weights as
full tensors on rank 0, saved by peft in its own format, so evaluation, merge and export never see a
shard; `optimizer_state` gathers AdamW's state keyed by parameter name. Both are collectives: every
rank calls them, rank 0 writes.
"""

from __future__ import annotations

import contextlib
import re

import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig

FSDP_METHODS = ("lora", "dora")  # adapters inside the layers; prompt/prefix tuning and 4-bit qlora stay on DDP
GPU_SHARE = 0.7  # auto: FSDP when the weights and the adapter's training state need more of one GPU than this
ADAM_BYTES = 16  # a trainable float32 weight, its gradient and AdamW's two moments


def choose(cfg: TrainConfig, base_path: str, device: torch.device, dtype: torch.dtype, world: int) -> str:
    """'single' (one process), 'ddp' or 'fsdp'."""
    if world == 1:
        return "single"
    if cfg.fsdp == "on":
        if cfg.method not in FSDP_METHODS:
            raise ConfigError(f"fsdp: method {cfg.method} is not sharded; use lora or dora with FSDP, or fsdp off")
        return "fsdp"
    if cfg.fsdp == "off" or device.type != "cuda" or cfg.method not in FSDP_METHODS:
        return "ddp"
    return "fsdp" if training_bytes(base_path, cfg, dtype) > GPU_SHARE * gpu_bytes(device) else "ddp"


def gpu_bytes(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).total_memory


def training_bytes(base_path: str, cfg: TrainConfig, dtype: torch.dtype) -> int:
    """The base's weights in `dtype` plus ADAM_BYTES per LoRA weight, counted on a meta-device copy (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_path, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    weights = sum(p.numel() for p in model.parameters()) * dtype.itemsize
    names = None if cfg.targets == "all-linear" else set(cfg.targets)
    head = model.get_output_embeddings()
    lora = sum((m.in_features + m.out_features) * cfg.lora_rank for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and m is not head and (names is None or name.rsplit(".", 1)[-1] in names))
    return weights + lora * ADAM_BYTES


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (model.layers, transformer.h, ...): one FSDP group each."""
    blocks = getattr(model.get_base_model(), "_no_split_modules", None) or []
    found = [m for m in model.modules() if type(m).__name__ in blocks]
    if not found:  # models that do not name their blocks: the children of the longest ModuleList
        lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
        found = list(max(lists, key=len)) if lists else []
    return found


def shard(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """FSDP2 in place: each decoder layer one group, then the root (embeddings, norm, output layer). On a GPU the
    layers compute in bf16 and gradients are reduced in float32; the model may still be on the CPU (each group
    moves its shard to the GPU)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    mp = MixedPrecisionPolicy()
    if device.type == "cuda" and dtype == torch.bfloat16:
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layers = decoder_layers(model)
    if not layers:
        raise ConfigError("fsdp: no decoder layers found in this model to shard; use fsdp off (DDP)")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.index is not None else None)


def grad_sync(model: nn.Module, last: bool):
    """A context for one micro-batch's backward: gradients cross ranks only on the step's last micro-batch."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if not last and hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return contextlib.nullcontext()


def rank_share(batches: list, rank: int, world: int, model: nn.Module) -> list[tuple[dict, bool]]:
    """(batch, counts) pairs of this rank's share (every world-th batch). Under FSDP every forward is a
    collective, so a rank with one batch fewer runs its last batch again with counts False (loss not added)."""
    mine = [(b, True) for b in batches[rank::world]]
    if is_fsdp(model) and world > 1:
        most = -(-len(batches) // world)
        pad = batches[-1] if not mine else mine[-1][0]
        mine += [(pad, False)] * (most - len(mine))
    return mine


# ---------------------------------------------------------------- state that leaves the model

def adapter_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """FSDP: the trainable weights gathered as full CPU tensors, keyed like the peft model's own state_dict (rank 0
    gets them, the others an empty dict; every rank must call). None when the model is not sharded."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=True))


def load_adapter(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_name: str = "default") -> None:
    """FSDP: adapter weights as peft saved them (keys without the adapter name) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    tag = re.compile(rf"\.{re.escape(adapter_name)}(?=\.|$)")
    names = {tag.sub("", n): n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise ConfigError(f"the saved adapter lacks {len(missing)} weights of the model being trained "
                          f"(first: {missing[0]}); it was saved with other adapter settings")
    full = {names[k]: v for k, v in tensors.items() if k in names}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict; under FSDP gathered in full on rank 0 and keyed by parameter name."""
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if any(not isinstance(k, str) for k in state.get("state", {})):
        raise ConfigError("this checkpoint was written without FSDP (its optimizer state is not keyed by "
                          "parameter name); resume it with fsdp off")
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
