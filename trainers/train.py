"""The training recipe: `python -m trainers.train RUN_DIR` (or `torchrun --nproc-per-node N -m trainers.train RUN_DIR`).

One class, read top to bottom: `setup` (config, data, base model, adapter, optimizer, resume),
`train` (the loop: loss on assistant tokens only, gradient accumulation, validation, early
stopping, checkpoints, cancel), `save_checkpoint`, `save_outputs` (adapter, optional merged
model) and `cleanup`. The run folder is everything it reads and writes:

    config.json          the TrainConfig (written by the app)
    run.json             what the app knows: dataset, version, content hash (read for the manifest)
    data/records.jsonl   the dataset version exported as chat JSONL
    events.jsonl         one JSON object per start/data/batch_plan/setup/phase/step/eval/checkpoint/record_losses/end,
                         appended as they happen
    manifest.json        seed, dataset hash, template, base model and revision, library versions, config
    checkpoints/step-N/  adapter weights (safetensors), optimizer, scheduler, RNG and loop state (safetensors +
                         JSON: resuming never unpickles; see trainers/checkpoint.py), resumable after a kill
    adapter/             the final LoRA adapter in peft format (the best validation loss)
    merged/              base + adapter merged (when config.merge)
    record_losses.jsonl  each training record's mean loss per answer token under adapter/ (config.record_losses):
                         {line (0-based in data/records.jsonl), loss, tokens, truncated}
    cancel               created by the app to stop the run gracefully

It never opens the project's DuckDB file. More than one GPU: under torchrun every rank runs
this same file with DDP, or FSDP2 for models too big for one GPU (trainers/distributed.py); rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trainers import checkpoint, distributed, flops, quiet
from trainers import data as D
from trainers.config import PREFERENCE_METHODS, ConfigError, TrainConfig, read_run_config
from trainers.tracking import Reporter as _Reporter  # mlflow + tensorboard by default
from workbench.core import files  # write aside, then rename (stdlib only; no store)

EVENTS, CANCEL, MANIFEST = "events.jsonl", "cancel", "manifest.json"
RECORDS = Path("data") / "records.jsonl"
RECORD_LOSSES = "record_losses.jsonl"
RECORD_LOSSES_MAX = 100_000  # more training records than this: the per-record pass is skipped, with a note
LOGITS_BYTES = 2 << 30  # float32 logits (and their model-dtype original) one batch of the per-record pass may hold


class TrainingError(RuntimeError):
    """The run cannot go on (NaN loss, out of memory); the message says what to change."""


class Events:
    """events.jsonl: appended and flushed line by line so the app can follow along."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def emit(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"type": kind, "time": round(time.time(), 3), **fields}, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    last_eval_step: int = -1
    tokens_seen: int = 0
    recent_losses: list = field(default_factory=list)


class Throughput:
    """Step times and token counts; the steady state leaves out the first WARMUP steps (compilation)."""

    WARMUP = 3

    def __init__(self):
        self.steps: list[tuple[float, int, int, float | None]] = []  # (seconds, tokens, supervised, model FLOPs)

    def add(self, seconds: float, tokens: int, supervised: int, model_flops: float | None = None) -> None:
        self.steps.append((seconds, tokens, supervised, model_flops))

    def summary(self, device: torch.device | None, *, peak_flops: float | None = None, world: int = 1) -> dict:
        """Steady-state tokens/s (all ranks together), peak GPU memory, and where the step's model FLOPs are
        known (trainers.flops) the model TFLOP/s per GPU and MFU against the GPU's dense bf16 peak."""
        steady = self.steps[self.WARMUP:] if len(self.steps) > self.WARMUP else self.steps
        seconds = sum(s[0] for s in steady)
        out: dict = {}
        if seconds > 0:
            out["steady_tokens_per_s"] = round(sum(s[1] for s in steady) / seconds, 1)
            out["steady_supervised_tokens_per_s"] = round(sum(s[2] for s in steady) / seconds, 1)
            out["steady_steps"] = len(steady)
            if steady and all(s[3] is not None for s in steady):
                per_gpu = sum(s[3] for s in steady) / seconds / max(world, 1)
                out["model_tflops_per_s"] = round(per_gpu / 1e12, 2)
                if peak_flops:
                    out["mfu"] = round(per_gpu / peak_flops, 4)
        if device is not None and device.type == "cuda":
            out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        return out


# ---------------------------------------------------------------- model helpers (shared with pre-flight)

def pick_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    cuda = torch.cuda.is_available()
    if not cuda:
        # Small CPU ops slow down many times when torch's threads compete with other processes for cores.
        torch.set_num_threads(cfg.cpu_threads or max(1, (os.cpu_count() or 2) - 1))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cfg.precision == "bf16" or (cfg.precision == "auto" and cuda and torch.cuda.is_bf16_supported()):
        return device, torch.bfloat16
    return device, torch.float32


def attention_implementation(device: torch.device, packed: bool = False) -> str:
    """flash-attention (varlen over packed rows) on a GPU when installed; else, for packed rows on a GPU,
    flex attention (a block-sparse mask: each example's blocks only); else SDPA. All honour the
    restarting position ids of packed rows (SDPA through a dense block-diagonal mask)."""
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        if packed:
            return "flex_attention"
    return "sdpa"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ConfigError(_missing_model(path, exc)) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(path: str, cfg: TrainConfig, device: torch.device, dtype: torch.dtype, place: bool = True):
    """The base model from a folder or the local Hugging Face cache (never the network); on `device` when place
    (FSDP leaves it on the CPU and moves each rank's shard)."""
    from transformers import AutoModelForCausalLM

    packed = cfg.packing and cfg.method in ("lora", "dora", "qlora")
    kwargs = dict(dtype=dtype, attn_implementation=attention_implementation(device, packed), local_files_only=True)
    if cfg.method == "qlora":
        if device.type != "cuda":
            raise ConfigError("method qlora needs a CUDA GPU; use lora or dora on this machine")
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("method qlora needs the bitsandbytes package; `pip install bitsandbytes` or use lora")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise ConfigError(_missing_model(path, exc)) from None
    if cfg.method != "qlora" and place:
        model.to(device)
    return model


def _missing_model(path: str, exc: Exception) -> str:
    return (f"base model {path!r} is neither a model folder nor in the local Hugging Face cache; give a folder with "
            f"config.json and weights, download the model first (e.g. `hf download {path}`), or use 'tiny' "
            f"({str(exc).splitlines()[0][:160]})")


def wrap_peft(model, cfg: TrainConfig):
    """The base model with a fresh adapter of cfg.method (peft does the adapter maths)."""
    import peft

    if cfg.method in ("lora", "dora", "qlora"):
        if cfg.method == "qlora":
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        pc = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                             target_modules=cfg.targets, use_dora=cfg.method == "dora", task_type="CAUSAL_LM")
    elif cfg.method == "prompt-tuning":
        pc = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)
    else:
        pc = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        return peft.get_peft_model(model, pc)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"method {cfg.method}: peft cannot apply it to this model "
                          f"({str(exc).splitlines()[0][:200]}); check target_modules or try lora") from None


def loss_sum(model, batch: dict) -> torch.Tensor:
    """Summed cross-entropy over the supervised tokens of a batch (float32).

    This is the hook for a fused or chunked loss on a GPU: it gets the model and the batch and
    returns the sum; the caller divides by the supervised tokens of the whole optimizer step.
    On a GPU it is `fastloss.loss_sum` (logits at supervised positions only, chunk by chunk).
    """
    if batch["input_ids"].is_cuda:
        from trainers import fastloss

        if fastloss.supports(model):
            return fastloss.loss_sum(model, batch)
    logits, targets = _shifted_logits(model, batch)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=D.IGNORE, reduction="sum")


def row_loss_sums(model, batch: dict) -> torch.Tensor:
    """loss_sum's plain path row by row: each row's summed cross-entropy over its supervised tokens (float32)."""
    logits, targets = _shifted_logits(model, batch)
    per_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=D.IGNORE, reduction="none")  # ignored positions give 0
    return per_token.view(targets.shape).sum(1)


def _shifted_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of the plain path, aligned: the logits at position t predict targets[t] = labels[t + 1]."""
    # No KV cache: with a cache transformers stops reading restarting position ids as packed examples.
    inputs = {"input_ids": batch["input_ids"], "use_cache": False}
    if "attention_mask" in batch:
        inputs["attention_mask"] = batch["attention_mask"]
    else:
        inputs["position_ids"] = batch["position_ids"]  # packed rows: restarting positions separate examples
    logits = model(**inputs).logits
    labels = batch["labels"]
    logits = logits[:, -labels.shape[1]:]  # prompt tuning prepends virtual tokens
    return logits[:, :-1], labels[:, 1:]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def tiny_texts(records: list[dict]) -> list[str]:
    return list(D.plain_texts(records))


# ---------------------------------------------------------------- the recipe

class TrainingRecipe:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir).resolve()
        if not (self.run_dir / "config.json").exists():
            raise ConfigError(f"{self.run_dir} has no config.json; prepare the run with the app or `workbench train`")
        self.cfg = read_run_config(self.run_dir)
        self.world, self.rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
        self.main = self.rank == 0
        self.parallel = "single"  # or ddp, fsdp (trainers.distributed.choose)
        self.events = Events(self.run_dir / EVENTS, enabled=self.main)
        self.state = LoopState()
        self.reporter = None
        self.started = time.monotonic()
        self.speed = Throughput()
        self.flop_counts: flops.ModelCounts | None = None
        self.setup_s: dict[str, float] = {}  # where the time before the first step went (the 'setup' event)

    @contextlib.contextmanager
    def _timed(self, part: str):
        """Adds the seconds spent inside to setup_s[part]."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.setup_s[part] = round(self.setup_s.get(part, 0.0) + time.monotonic() - t0, 2)

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg = self.cfg
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device, self.dtype = pick_device(cfg)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        torch.manual_seed(cfg.seed)
        (self.run_dir / CANCEL).unlink(missing_ok=True) if self.main else None
        self.events.emit("start", pid=os.getpid(), device=str(self.device), dtype=str(self.dtype).removeprefix("torch."),
                         world_size=self.world, resumed=self._latest_checkpoint() is not None)

        records = D.read_records(self.run_dir / RECORDS)
        train_records, val_records, how = D.split_records(records, val_fraction=cfg.val_fraction,
                                                          max_val_records=cfg.max_val_records, seed=cfg.seed)
        self.train_lines = [r[D.LINE] for r in train_records]  # Example.record -> line in records.jsonl
        with self._timed("base"):  # the tiny base is pre-trained here the first time
            self.base_path = self._resolve_base(train_records)
        with self._timed("load"):
            self.tokenizer = load_tokenizer(self.base_path)
            self.pad_id = self.tokenizer.pad_token_id
            self.parallel = distributed.choose(cfg, self.base_path, self.device, self.dtype, self.world)
            model = load_base(self.base_path, cfg, self.device, self.dtype, place=self.parallel != "fsdp")
            self.model = wrap_peft(model, cfg)
        self.peft_model = self.model
        self.flop_counts = flops.count(self.model) if hasattr(self.model, "get_output_embeddings") else None
        self.peak_flops = flops.peak_flops(self.device, self.dtype)
        from trainers import fastloss

        fastloss.prepare(self.model, cfg, self.device)  # GPU only: compiled decoder layers
        if self.parallel == "fsdp":  # compiled layers first (as torchtitan); sharded before anything runs on the GPU
            distributed.shard(self.model, self.device, self.dtype)
        self.plan = self._plan_batches(train_records)
        cfg = self.cfg = cfg.replace(max_seq_len=self.plan.max_seq_len, batch_tokens=self.plan.batch_tokens)
        with self._timed("tokenize"):
            self.val_examples, _ = D.tokenize(self.tokenizer, val_records, cfg.max_seq_len)
        if not self.train_examples or not self.val_examples:
            raise ConfigError("no training or validation example keeps an assistant token within max_seq_len; "
                              f"raise max_seq_len (now {cfg.max_seq_len})")
        self.val_batches = D.eval_batches(self.val_examples, batch_tokens=cfg.batch_tokens, max_len=self.plan.row_len,
                                          packed=cfg.packing, pad_id=self.pad_id, fixed_shape=self._fixed_shape)
        micro_per_epoch = len(self._epoch(0))
        self.steps_per_epoch = max(1, micro_per_epoch // (cfg.grad_accum * self.world))
        self.total_steps = cfg.max_steps or max(1, math.ceil(self.steps_per_epoch * cfg.epochs))
        self.events.emit("data", split=how, train_records=len(train_records), val_records=len(val_records),
                         truncated=self.train_counts["truncated"], dropped=self.train_counts["dropped"],
                         supervised_tokens_per_epoch=self.train_counts["supervised_tokens"],
                         steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps)

        if self.parallel == "ddp":
            self.model = distributed.wrap_ddp(self.model, self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           fused=self.device.type == "cuda")
        from transformers import get_scheduler

        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.lr_schedule]
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=min(cfg.warmup_steps, self.total_steps),
                                       num_training_steps=self.total_steps)
        self.trainable_params = sum(p.numel() for p in trainable)
        self.total_params = sum(p.numel() for p in self.model.parameters())
        self._resume()
        if self.main:
            self._write_manifest(how, len(train_records), len(val_records))
            self.reporter = _Reporter.create(cfg, self.run_dir)

    def _plan_batches(self, train_records: list[dict]):
        """max_seq_len, row width and batch_tokens (trainers.autobatch): a resumed run reads the saved plan;
        else the settings, or on a GPU what the data needs and a memory model checked by a probe step."""
        from trainers import autobatch

        cfg, model_config = self.cfg, self.peft_model.get_base_model().config
        plan = autobatch.BatchPlan.load(self.run_dir) if self._latest_checkpoint() is not None else None
        if plan is None:
            lengths = []
            if not cfg.max_seq_len and self.device.type == "cuda":
                limit = getattr(model_config, "max_position_embeddings", None) or 1 << 20
                with self._timed("tokenize"):
                    lengths = [len(e.input_ids) for e in D.tokenize(self.tokenizer, train_records, limit)[0]]
            weights = sum(p.numel() * p.element_size() for p in self.peft_model.parameters())
            weights //= self.world if self.parallel == "fsdp" else 1  # each GPU holds its shard
            plan = autobatch.plan_training(cfg, lengths, device=self.device, config=model_config,
                                           weight_bytes=weights)
            with self._timed("tokenize"):
                self.train_examples, self.train_counts = D.tokenize(self.tokenizer, train_records, plan.max_seq_len)
            if not cfg.batch_tokens and self.device.type == "cuda" and self.train_examples:
                def first_batch(tokens: int) -> dict:
                    return D.epoch_batches(self.train_examples, batch_tokens=tokens, max_len=plan.row_len,
                                           packed=cfg.packing, seed=cfg.seed, epoch=0, pad_id=self.pad_id,
                                           fixed_shape=True)[0]

                with self._timed("probe"):  # its first step compiles the layers
                    plan = autobatch.probe(plan, self._probe_step, first_batch, self.device,
                                           autobatch.fixed_bytes(model_config, weights))
            if self.world > 1:  # every rank trains with the smallest plan
                t = torch.tensor(plan.batch_tokens, device=self.device)
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
                plan.batch_tokens = int(t)
            if self.main:
                plan.save(self.run_dir)
        else:
            with self._timed("tokenize"):
                self.train_examples, self.train_counts = D.tokenize(self.tokenizer, train_records, plan.max_seq_len)
        self.events.emit("batch_plan", **plan.to_dict())
        return plan

    def _probe_step(self, batch: dict) -> None:
        """One forward and backward pass, gradients dropped: the memory probe of autobatch."""
        self.model.train()
        with self._autocast():
            loss = loss_sum(self.model, to_device(batch, self.device))
        loss.backward()
        self.model.zero_grad(set_to_none=True)

    def _resolve_base(self, train_records: list[dict]) -> str:
        if self.cfg.base_model != "tiny":
            path = Path(self.cfg.base_model).expanduser()
            return str(path.resolve()) if path.exists() else self.cfg.base_model
        from trainers import tiny

        if self.world > 1 and not self.main:  # rank 0 builds it; the others wait at the barrier below
            torch.distributed.barrier()
            return self.cfg.tiny_dir
        from trainers.autobatch import CPU_BATCH_TOKENS

        base_cfg = self.cfg.replace(batch_tokens=self.cfg.batch_tokens or CPU_BATCH_TOKENS)  # pre-training's batch
        folder = tiny.ensure_tiny(base_cfg, tiny_texts(train_records), progress=self._tiny_progress)
        if self.world > 1:
            torch.distributed.barrier()
        return str(folder)

    def _tiny_progress(self, step: int, total: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == total:
            self.events.emit("phase", phase="pre-training the tiny base", step=step, of=total, loss=round(loss, 4))

    def _epoch(self, epoch: int) -> list[dict]:
        cfg = self.cfg
        return D.epoch_batches(self.train_examples, batch_tokens=cfg.batch_tokens, max_len=self.plan.row_len,
                               packed=cfg.packing, seed=cfg.seed, epoch=epoch, pad_id=self.pad_id,
                               fixed_shape=self._fixed_shape)

    @property
    def _fixed_shape(self) -> bool:
        """On a GPU every packed batch has one shape, so the compiled layers are not compiled again (the
        last batch of an epoch gets empty rows; an epoch boundary used to cost 3-20 s of recompilation)."""
        return self.device.type == "cuda"

    # ------------------------------------------------------------ train

    def train(self) -> str:
        """Run until max steps, the epochs, early stopping or a cancel; returns the end status."""
        cfg, st = self.cfg, self.state
        if st.step == 0 and st.last_eval_step < 0:
            with self._timed("first_eval"):
                self.evaluate()  # the starting point of the validation curve
        before = round(time.monotonic() - self.started, 2)
        self.setup_s["other"] = round(max(0.0, before - sum(self.setup_s.values())), 2)
        self.events.emit("setup", seconds=before, parts=self.setup_s)  # the time before the first step, by part
        step_times: list[float] = []
        while st.step < self.total_steps:
            batches = self._epoch(st.epoch)
            per_step = cfg.grad_accum * self.world
            while st.batch_in_epoch + per_step <= len(batches) and st.step < self.total_steps:
                if self._cancel_requested():
                    self.save_checkpoint()
                    return "cancelled"
                t0 = time.monotonic()
                group = batches[st.batch_in_epoch: st.batch_in_epoch + per_step]
                mine = group[self.rank::self.world]
                lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
                supervised = sum(D.supervised_in(b) for b in group)  # every rank's micro-batches
                loss, tokens = self._optimizer_step(mine)
                self.speed.add(time.monotonic() - t0, tokens, supervised, self._model_flops(group, supervised))
                st.batch_in_epoch += per_step
                st.step += 1
                st.tokens_seen += tokens
                st.recent_losses = (st.recent_losses + [loss])[-20:]
                step_times = (step_times + [time.monotonic() - t0])[-20:]
                mean_step = sum(step_times) / len(step_times)
                self.events.emit("step", step=st.step, total_steps=self.total_steps, epoch=round(
                    st.epoch + st.batch_in_epoch / max(len(batches), 1), 3), loss=round(loss, 5),
                    lr=lr, tokens_per_s=round(tokens / max(step_times[-1], 1e-9), 1),
                    supervised_tokens_per_s=round(supervised / max(step_times[-1], 1e-9), 1),
                    elapsed_s=round(time.monotonic() - self.started, 1),
                    remaining_s=round(mean_step * (self.total_steps - st.step), 1), **self.step_metrics())
                self._report({"train/loss": loss, "train/lr": lr})
                if st.step % cfg.eval_every == 0 or st.step == self.total_steps:
                    if self.evaluate():
                        self.save_checkpoint()
                        return "stopped early"
                if st.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            if st.step < self.total_steps:
                st.epoch += 1
                st.batch_in_epoch = 0
        if st.last_eval_step != st.step:
            self.evaluate()
        if st.step % cfg.checkpoint_every:  # else the loop has just saved this step
            self.save_checkpoint()
        return "completed"

    def _model_flops(self, group: list[dict], supervised: int) -> float | None:
        """The step's model FLOPs (trainers.flops), or None where the batches do not say their attention pairs."""
        if self.flop_counts is None or any("attended_pairs" not in b for b in group):
            return None
        return self.flop_counts.step_flops(sum(int(b["n_tokens"]) for b in group), supervised,
                                           sum(int(b["attended_pairs"]) for b in group))

    def step_metrics(self) -> dict:
        """Extra figures of the last step for its event (preference training adds rewards)."""
        return {}

    def _cancel_requested(self) -> bool:
        """The app's cancel file; under DDP every rank follows rank 0's view, so they stop at the same step."""
        flag = torch.tensor(float((self.run_dir / CANCEL).exists()), device=self.device)
        if self.world > 1:
            torch.distributed.broadcast(flag, src=0)
        return bool(flag)

    def _optimizer_step(self, micro_batches: list[dict]) -> tuple[float, int]:
        """One optimizer step over micro-batches; the loss is the mean over every supervised token
        of the step (all micro-batches, all ranks), so accumulation and packing do not reweight it."""
        n_items = torch.tensor(float(sum(D.supervised_in(b) for b in micro_batches)), device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(n_items)
        self.model.train()
        total = torch.zeros((), device=self.device)
        tokens = 0
        for i, batch in enumerate(micro_batches):
            batch = to_device(batch, self.device)
            tokens += int(batch["n_tokens"])
            with distributed.grad_sync(self.model, last=i == len(micro_batches) - 1), self._autocast():
                loss = loss_sum(self.model, batch)
            (loss * self.world / n_items.clamp(min=1)).backward()
            total += loss.detach()
        if self.world > 1:
            torch.distributed.all_reduce(total)
        value = float(total / n_items.clamp(min=1))
        if not math.isfinite(value):
            raise TrainingError(f"the training loss became {value} at step {self.state.step + 1}; lower the learning "
                                f"rate (now {self.cfg.learning_rate:g}), keep max_grad_norm at 1.0, or use precision "
                                "fp32; the run stopped and its last checkpoint is kept")
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, tokens * self.world

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype == torch.bfloat16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> bool:
        """Validation loss (mean over supervised tokens); returns True when early stopping says stop."""
        cfg, st = self.cfg, self.state
        self.model.eval()
        total = torch.zeros(2, device=self.device)
        for batch, counts in distributed.rank_share(self.val_batches, self.rank, self.world, self.model):
            batch = to_device(batch, self.device)
            with self._autocast():
                loss = loss_sum(self.model, batch)
            if counts:  # FSDP: a rank with one batch fewer repeats one (every forward is a collective)
                total[0] += loss
                total[1] += D.supervised_in(batch)
        if self.world > 1:
            torch.distributed.all_reduce(total)
        val = float(total[0] / total[1].clamp(min=1))
        st.last_eval_step = st.step
        improved = val < st.best_val - cfg.early_stopping_min_delta
        if improved:
            st.best_val, st.best_step, st.bad_evals = val, st.step, 0
            self._save_adapter(self.run_dir / "best-adapter")
        else:
            st.bad_evals += 1
        self.events.emit("eval", step=st.step, val_loss=round(val, 5), best_val_loss=round(st.best_val, 5),
                         improved=improved)
        self._report({"val/loss": val})
        return bool(cfg.early_stopping_patience) and st.bad_evals >= cfg.early_stopping_patience

    # ------------------------------------------------------------ checkpoints and outputs

    def _save_adapter(self, folder: Path) -> None:
        state = distributed.adapter_state(self.model)  # FSDP: gathered on rank 0 (every rank takes part); else None
        if not self.main:
            return
        with files.atomic_path(folder) as tmp:
            self.peft_model.save_pretrained(tmp, state_dict=state)

    def save_checkpoint(self) -> None:
        """checkpoints/step-N: written aside and renamed, so a kill never leaves half a checkpoint."""
        if self.world > 1:
            torch.distributed.barrier()
        adapter = distributed.adapter_state(self.model)  # FSDP: gathered by every rank onto rank 0; else None
        optimizer = distributed.optimizer_state(self.model, self.optimizer)
        if not self.main:
            return
        root = self.run_dir / "checkpoints"
        final = root / f"step-{self.state.step:07d}"
        tmp = root / f".step-{self.state.step:07d}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.peft_model.save_pretrained(tmp / "adapter", state_dict=adapter)
        checkpoint.save_state(tmp, {"optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                                    "rng_cpu": torch.get_rng_state(),
                                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
        (tmp / "state.json").write_text(json.dumps(asdict(self.state)), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self.events.emit("checkpoint", step=self.state.step, path=str(final.relative_to(self.run_dir)))

    def _latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in (self.run_dir / "checkpoints").glob("step-*") if (p / "state.json").exists())
        return found[-1] if found else None

    def _resume(self) -> None:
        ckpt = self._latest_checkpoint()
        if ckpt is None:
            return
        try:  # never unpickled freely: a run folder may come from someone else
            saved = checkpoint.load_state(ckpt)
        except checkpoint.CheckpointError as exc:
            raise TrainingError(str(exc)) from exc
        self._load_adapter(ckpt / "adapter")
        distributed.load_optimizer_state(self.model, self.optimizer, saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng_cpu"].cpu())
        if saved.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved["rng_cuda"]])
        self.state = LoopState(**json.loads((ckpt / "state.json").read_text(encoding="utf-8")))
        self.events.emit("resume", step=self.state.step, checkpoint=str(ckpt.relative_to(self.run_dir)))

    def _load_adapter(self, folder: Path) -> None:
        """Adapter weights saved by peft (safetensors) into the model being trained."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if self.parallel == "fsdp":  # full tensors into the shards
            distributed.load_adapter(self.model, load_file(folder / "adapter_model.safetensors"))
            return
        set_peft_model_state_dict(self.peft_model, load_file(folder / "adapter_model.safetensors",
                                                             device=str(self.device)))

    def save_outputs(self) -> dict:
        """adapter/ (the adapter at the best validation loss) and, on request, merged/."""
        best = self.run_dir / "best-adapter"
        out = self.run_dir / "adapter"
        if not best.exists():
            self._save_adapter(out)  # every rank: FSDP gathers the adapter
        if not self.main:
            return {}
        if best.exists():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(best, out)
        self.tokenizer.save_pretrained(out)  # the adapter folder is self-contained for generation
        result = {"adapter": str(out)}
        if self.cfg.merge:
            if self.cfg.method in ("prompt-tuning", "prefix-tuning"):
                self.events.emit("warning", message=f"{self.cfg.method} adapters cannot be merged; only adapter/ saved")
            else:
                result["merged"] = str(merge_adapter(self.base_path, out, self.run_dir / "merged"))
        return result

    @torch.no_grad()
    def record_losses(self, status: str) -> None:
        """record_losses.jsonl: every training record's mean loss per supervised token under the saved adapter
        (the training loss, record by record: which records the adapter could not fit). One no-grad pass over
        the unpacked examples, shortest first and batched by tokens; rank 0 only; skipped with a note for
        cancelled runs, preference methods (no single answer to score) and more than RECORD_LOSSES_MAX records."""
        cfg = self.cfg
        if not self.main or not cfg.record_losses or status not in ("completed", "stopped early"):
            return
        if cfg.method in PREFERENCE_METHODS:
            self.events.emit("record_losses", skipped=f"method {cfg.method} trains on pairs; no per-record loss")
            return
        if self.parallel == "fsdp":  # the sharded model runs only with every rank; this pass is rank 0's alone
            self.events.emit("record_losses", skipped="not computed for FSDP runs (the model is sharded across ranks)")
            return
        examples = self.train_examples
        if len(examples) > RECORD_LOSSES_MAX:
            self.events.emit("record_losses", skipped=f"{len(examples):,} training records, more than "
                                                      f"{RECORD_LOSSES_MAX:,}; per-record losses are not recorded")
            return
        t0 = time.monotonic()
        self._load_adapter(self.run_dir / "adapter")  # the adapter the run keeps (best validation loss)
        model = self.peft_model.eval()
        # float32: merged weights give the same losses (to 1e-6) without the adapter's extra matmuls (2x on tiny)
        merged = self.dtype == torch.float32 and cfg.method in ("lora", "dora")
        if merged:
            model.merge_adapter()
        try:
            out = self._score(model, examples)
        finally:
            if merged:
                model.unmerge_adapter()
        if out is None:
            self.events.emit("record_losses", skipped="cancelled while scoring the training records")
            return
        with files.atomic_path(self.run_dir / RECORD_LOSSES) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for line, loss, tokens, cut in out:
                f.write(json.dumps({"line": line, "loss": round(loss, 6), "tokens": tokens, "truncated": cut}) + "\n")
        losses = sorted(o[1] for o in out)
        self.events.emit("record_losses", records=len(out), path=RECORD_LOSSES,
                         mean_loss=round(sum(losses) / max(len(losses), 1), 5),
                         median_loss=round(losses[len(losses) // 2], 5) if losses else None,
                         seconds=round(time.monotonic() - t0, 2))

    def _score(self, model, examples: list[D.Example]) -> list[tuple] | None:
        """(line, loss, supervised tokens, truncated) of each example, in one no-grad pass; None when cancelled."""
        from trainers import fastloss

        vocab = model.get_output_embeddings().weight.shape[0]
        budget = max(self.plan.row_len, min(self.cfg.batch_tokens, LOGITS_BYTES // (6 * vocab)))
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        groups, cur, shape = [], [], None
        if self._fixed_shape:
            # On a GPU every group has one shape, (rows, longest example): the compiled layers compile once for
            # this pass. Groups of growing widths recompiled them again and again (on an H100 the first 50
            # groups of a 4,514-record run took 25 s, and a QLoRA run did not finish scoring in 100 s).
            width = -(-max(len(e.input_ids) for e in examples) // fastloss.PAD_MULTIPLE) * fastloss.PAD_MULTIPLE
            shape = (max(1, budget // width), width)
            groups = [order[i: i + shape[0]] for i in range(0, len(order), shape[0])]
        else:
            for i in order:  # ascending lengths: the last example of a group is its longest
                if cur and len(examples[i].input_ids) * (len(cur) + 1) > budget:
                    groups.append(cur)
                    cur = []
                cur.append(i)
            groups += [cur] if cur else []
        out = []
        for n, group in enumerate(groups):
            if (self.run_dir / CANCEL).exists():
                return None
            if n % 50 == 0:
                self.events.emit("phase", phase="scoring each training record", step=len(out), of=len(examples))
            # one example a row, its boundaries told the model the way training tells them (position ids when packing)
            rows = D.unpacked([examples[i] for i in group])
            batch = to_device(D.collate(rows, self.pad_id, packed=self.cfg.packing, shape=shape), self.device)
            with self._autocast():
                sums = row_loss_sums(model, batch).tolist()
            tokens = (batch["labels"][:, 1:] != D.IGNORE).sum(1).tolist()
            out += [(self.train_lines[examples[i].record], s / t, t, examples[i].truncated)
                    for i, s, t in zip(group, sums, tokens)]
        return sorted(out)

    def _write_manifest(self, split_how: str, n_train: int, n_val: int) -> None:
        import peft
        import tokenizers
        import transformers

        run_info = {}
        if (self.run_dir / "run.json").exists():
            run_info = json.loads((self.run_dir / "run.json").read_text(encoding="utf-8"))
        manifest = {
            "seed": self.cfg.seed,
            "dataset": {k: run_info.get(k) for k in ("dataset", "version", "version_id", "content_hash")},
            "records_file_sha256": _sha256(self.run_dir / RECORDS),
            "split": split_how, "train_records": n_train, "val_records": n_val,
            "template": getattr(self.tokenizer, "chat_template", None),
            "base_model": {"name": self.cfg.base_model, "path": self.base_path, "revision": _revision(self.base_path)},
            "method": self.cfg.method, "trainable_parameters": self.trainable_params,
            "total_parameters": self.total_params,
            "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "world_size": self.world,
            "parallel": self.parallel,
            "libraries": {"python": platform.python_version(), "torch": torch.__version__,
                          "transformers": transformers.__version__, "peft": peft.__version__,
                          "tokenizers": tokenizers.__version__},
            "config": self.cfg.to_dict(),
        }
        (self.run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")

    def _report(self, metrics: dict) -> None:
        if self.reporter is not None:
            self.reporter.log(metrics, self.state.step)

    def cleanup(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def result(self) -> dict:
        losses = self.state.recent_losses
        return {"step": self.state.step, "train_loss": sum(losses) / len(losses) if losses else None,
                "eval_loss": self.state.best_val if math.isfinite(self.state.best_val) else None,
                "best_step": self.state.best_step, "setup_s": self.setup_s,
                **self.speed.summary(getattr(self, "device", None), peak_flops=getattr(self, "peak_flops", None),
                                     world=self.world)}


# ---------------------------------------------------------------- outputs and bookkeeping

def merge_adapter(base_path: str, adapter_dir: Path, out: Path) -> Path:
    """Base + adapter merged into plain weights (trainers.export: merged in f32, saved in the base's dtype)."""
    from trainers import export

    merged = export.merged_model(base_path, adapter_dir)
    with files.atomic_path(out) as tmp:
        export.write_merged(merged, load_tokenizer(base_path), tmp, export.saved_dtype(base_path))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _revision(base_path: str) -> str | None:
    """The hub commit of a cached model, else a hash of a local folder's weights (names and sizes when huge)."""
    folder = Path(base_path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(base_path, local_files_only=True))
            return folder.name  # snapshots/<commit>
        except Exception:
            return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    h = hashlib.sha256()
    small = sum(p.stat().st_size for p in files) < 1 << 30
    for p in files:
        h.update(p.name.encode() + b"\0")
        h.update(_sha256(p).encode() if small else str(p.stat().st_size).encode())
    return ("sha256:" if small else "names+sizes:") + h.hexdigest()


def _oom_advice(cfg: TrainConfig) -> str:
    smaller = max(cfg.max_seq_len, cfg.batch_tokens // 2)
    return (f"the GPU ran out of memory; lower batch_tokens (now {cfg.batch_tokens}, try {smaller}) "
            f"and raise grad_accum (now {cfg.grad_accum}) to keep the effective batch, lower max_seq_len "
            f"(now {cfg.max_seq_len}), turn on gradient_checkpointing, or use method qlora")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder (config.json, data/records.jsonl)")
    args = parser.parse_args(argv)
    quiet.child_process_setup()  # offline; no library progress bars or FutureWarnings in trainer.log
    try:
        from trainers.preference import recipe_for  # dpo and kto: TrainingRecipe with a preference loss

        recipe = recipe_for(args.run_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status, code = "failed", 1
    try:
        recipe.setup()
        status = recipe.train()
        outputs = recipe.save_outputs()
        try:  # the adapter is saved: a failure of this extra pass is a warning, not a failed run
            recipe.record_losses(status)
        except Exception as exc:
            traceback.print_exc()
            recipe.events.emit("record_losses", skipped=f"scoring the training records failed: {type(exc).__name__}: "
                                                        f"{str(exc).splitlines()[0] if str(exc) else ''}")
        recipe.events.emit("end", status=status, **recipe.result(), **outputs,
                           elapsed_s=round(time.monotonic() - recipe.started, 1))
        code = 0
    except (ConfigError, TrainingError) as exc:
        recipe.events.emit("end", status="failed", message=str(exc), **recipe.result())
        print(f"error: {exc}", file=sys.stderr)
    except torch.cuda.OutOfMemoryError:
        recipe.events.emit("end", status="failed", message=_oom_advice(recipe.cfg), **recipe.result())
        print(f"error: {_oom_advice(recipe.cfg)}", file=sys.stderr)
    except KeyboardInterrupt:
        recipe.events.emit("end", status="cancelled", message="interrupted", **recipe.result())
        code = 130
    except Exception as exc:  # a bug: keep the traceback in the log, one line in the events
        traceback.print_exc()
        recipe.events.emit("end", status="failed", message=f"internal error: {type(exc).__name__}: "
                                                           f"{str(exc).splitlines()[0] if str(exc) else ''}",
                           **recipe.result())
        code = 2
    finally:
        recipe.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())
