"""Preference training, DPO and KTO, on the training recipe (method dpo or kto).

The run folder is the same as for supervised training (trainers.train); `data/records.jsonl` holds the
preference version exported as TRL's conversational form: `{"prompt": [messages], "chosen": [assistant],
"rejected": [assistant]}` for DPO, `{"prompt": [...], "completion": [assistant], "label": true|false}` for KTO.

Each answer is tokenized as TRL does: the prompt rendered with the generation prompt, the prompt plus the answer
rendered whole, and the answer's tokens are where the two part (its end-of-turn marker included). A DPO
micro-batch holds the chosen rows of its pairs and then their rejected rows, right-padded, one forward pass.

The policy is a LoRA adapter; the reference is the starting point, with no second model in memory: the base
with the adapter switched off, or, when the run starts from another run's adapter (`start_adapter`), a frozen
copy of that adapter loaded beside the trained one (adapter-sized) and switched on for the reference pass.

    DPO (sigmoid)  loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))        (log-probs summed)
    IPO            loss = ((pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r - 1 / (2 beta))^2   (TRL's per-token form)
    KTO            z = max(0, mean over the batch of (pi - ref) on mismatched prompt/answer pairs), no gradient
                   desirable: w_d * (1 - sigmoid(beta * ((pi - ref) - z))); undesirable: w_u * (1 - sigmoid(beta *
                   (z - (pi - ref)))); the loss is the mean over examples.

Rewards are beta * (pi - ref); reward accuracy is the share of pairs whose chosen reward beats the rejected one
(for KTO: desirable examples with a positive reward and undesirable ones with a negative reward), the margin the
mean chosen minus rejected reward. Both are reported for training steps and validation (events `step`, `eval`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainers import data as D
from trainers.config import PREFERENCE_METHODS, ConfigError, TrainConfig, read_run_config
from trainers.train import CANCEL, RECORDS, TrainingError, TrainingRecipe, load_base, load_tokenizer, to_device, wrap_peft

IGNORE = D.IGNORE
CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, CPU_SEQ_LEN, GPU_SEQ_LEN = 2048, 16384, 512, 2048


# ---------------------------------------------------------------- records and tokens

def read_preference_records(path: str | Path, method: str, *, limit: int | None = None) -> list[dict]:
    """{prompt: [messages], answers: [chosen, rejected] or [completion], label (kto), split} per line (the
    first `limit` records when given)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            rec = json.loads(line)
            keys = ("chosen", "rejected") if method == "dpo" else ("completion",)
            if "prompt" not in rec or any(k not in rec for k in keys):
                want = "a preference dataset (prompt, chosen, rejected)" if method == "dpo" else \
                    "an unpaired preference dataset (prompt, completion, label)"
                raise ConfigError(f"{path} line {line_no}: method {method} trains on {want}; this record has "
                                  f"{', '.join(sorted(rec)) or 'no fields'}")
            out.append({"prompt": _messages(rec["prompt"], "user"), "answers": [_messages(rec[k], "assistant")
                                                                                for k in keys],
                        "label": bool(rec.get("label", True)), "split": rec.get("split")})
    if not out:
        raise ConfigError(f"{path}: no records to train on")
    return out


def _messages(value, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m.get("content") or ""} for m in value]


@dataclass
class Tokenized:
    prompt_ids: list[int]
    answer_ids: list[list[int]]  # [chosen, rejected] or [completion]
    label: bool = True


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_record(tokenizer, rec: dict) -> Tokenized:
    """TRL's split: the answer starts where the tokenized prompt (with the generation prompt) and the tokenized
    prompt + answer part, so a token merged across the boundary belongs to the answer."""
    from trainers import supervision

    supervision.require_template(tokenizer)

    def ids(messages: list[dict], generation: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt = ids(rec["prompt"], True)
    full = [ids(rec["prompt"] + answer, False) for answer in rec["answers"]]
    cut = min(common_prefix(prompt, f) for f in full)
    return Tokenized(prompt[:cut], [f[cut:] for f in full], rec["label"])


def tokenize_all(tokenizer, records: list[dict], max_len: int) -> tuple[list[Tokenized], dict]:
    """Examples and counts; a sequence longer than max_len keeps its start, an example whose prompt alone fills
    max_len is dropped (nothing of its answer would be left)."""
    out, truncated, dropped = [], 0, 0
    for rec in records:
        t = tokenize_record(tokenizer, rec)
        if len(t.prompt_ids) >= max_len or not all(t.answer_ids):
            dropped += 1
            continue
        truncated += any(len(t.prompt_ids) + len(a) > max_len for a in t.answer_ids)
        t.answer_ids = [a[: max_len - len(t.prompt_ids)] for a in t.answer_ids]
        out.append(t)
    return out, {"truncated": truncated, "dropped": dropped}


# ---------------------------------------------------------------- batches

def collate(examples: list[Tokenized], pad_id: int, *, kl: bool = False) -> dict:
    """Right-padded rows: every example's first answer, then every example's second (DPO: chosen rows, then
    rejected rows, as TRL's collator orders them). completion_mask marks answer tokens. kl (KTO): also the
    mismatched rows prompt_i + answer_(i-1) for the KL estimate."""
    seqs = [(e.prompt_ids, e.answer_ids[k]) for k in range(len(examples[0].answer_ids)) for e in examples]
    batch = _pad(seqs, pad_id)
    batch["n_pairs"] = torch.tensor(len(examples))
    batch["label"] = torch.tensor([e.label for e in examples])
    if kl:
        turned = [(e.prompt_ids, examples[i - 1].answer_ids[0]) for i, e in enumerate(examples)]
        batch.update({f"kl_{k}": v for k, v in _pad(turned, pad_id).items() if k != "n_tokens"})
    return batch


def _pad(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    width = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, a) in enumerate(seqs):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        attention[i, : len(p) + len(a)] = 1
        completion[i, len(p): len(p) + len(a)] = 1
    labels = ids.masked_fill(completion == 0, IGNORE)  # D.supervised_in counts the answer tokens
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion, "labels": labels,
            "n_tokens": attention.sum()}


def batches(examples: list[Tokenized], *, batch_tokens: int, pad_id: int, seed: int, epoch: int, shuffle: bool = True,
            kl: bool = False) -> list[dict]:
    """One epoch's micro-batches: examples in a seeded order, as many per batch as fit batch_tokens (all rows
    of a batch padded to its longest), at least one."""
    order = list(range(len(examples)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    groups, cur, longest = [], [], 0
    for i in order:
        e = examples[i]
        n = len(e.prompt_ids) + max(len(a) for a in e.answer_ids)
        rows = len(e.answer_ids) * (2 if kl else 1)
        if cur and max(longest, n) * rows * (len(cur) + 1) > batch_tokens:
            groups.append(cur)
            cur, longest = [], 0
        cur.append(e)
        longest = max(longest, n)
    if cur:
        groups.append(cur)
    return [collate(g, pad_id, kl=kl) for g in groups]


# ---------------------------------------------------------------- pre-flight

def preflight(records_path: str | Path, cfg: TrainConfig, *, measure_steps: int = 3) -> dict:
    """trainers.preflight for dpo and kto: the split, token counts of prompt + answer, what max_seq_len cuts,
    steps per epoch, one pair as the model sees it, and a time per step measured from real preference steps
    (policy forward and backward, reference forward) on this machine. Same keys as the supervised pre-flight."""
    import statistics
    import time

    from trainers.preflight import READ_RECORDS, _count_lines, base_and_adapter

    kto = cfg.method == "kto"
    lines = _count_lines(records_path)
    records = read_preference_records(records_path, cfg.method, limit=READ_RECORDS)
    train, val, how = D.split_records(records, val_fraction=cfg.val_fraction, max_val_records=cfg.max_val_records,
                                      seed=cfg.seed)
    notes = [f"{cfg.method}: each {'example' if kto else 'pair'} is scored by the adapter and by the reference "
             f"({'the starting adapter' if cfg.start_adapter.strip() else 'the base model, adapter off'}); "
             f"beta {cfg.beta:g}"]
    scale = 1.0
    if lines > READ_RECORDS:
        scale = lines / READ_RECORDS
        notes.append(f"counts are estimated from the first {READ_RECORDS:,} of {lines:,} records")
    texts = (m["content"] for r in train for msgs in (r["prompt"], *r["answers"]) for m in msgs if m["content"])
    tokenizer, model, device = base_and_adapter(cfg.replace(method="lora", start_adapter=""), texts, notes)
    cuda = device.type == "cuda"
    max_len = cfg.max_seq_len or (GPU_SEQ_LEN if cuda else CPU_SEQ_LEN)
    batch_tokens = cfg.batch_tokens or (GPU_BATCH_TOKENS if cuda else CPU_BATCH_TOKENS)
    examples, counts = tokenize_all(tokenizer, train, max_len)
    if not examples:
        raise ConfigError(f"no training example keeps an answer within max_seq_len ({max_len}); raise max_seq_len")
    lengths = [len(e.prompt_ids) + max(map(len, e.answer_ids)) for e in examples]
    epoch = batches(examples, batch_tokens=batch_tokens, pad_id=tokenizer.pad_token_id, seed=cfg.seed, epoch=0,
                    kl=kto)
    steps_per_epoch = max(1, math.floor(len(epoch) * scale / cfg.grad_accum))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    model.train()
    times = []
    for batch in (epoch * (measure_steps + 1))[: measure_steps + 1]:
        t0 = time.monotonic()
        batch = to_device(batch, device)
        args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        logps = sequence_logps(model, *args)
        with torch.no_grad(), model.disable_adapter():
            sequence_logps(model, *args)
        (-logps.mean()).backward()  # the step's shape of work; the loss itself is the run's
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.monotonic() - t0)
    per_micro = statistics.median(times[1:]) if len(times) > 1 else times[0]
    planned = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    first = examples[0]
    example = [{"text": tokenizer.decode(first.prompt_ids, skip_special_tokens=False), "trained": False},
               {"text": tokenizer.decode(first.answer_ids[0], skip_special_tokens=False), "trained": True}]
    if not kto:
        example += [{"text": "\n\nrejected: ", "trained": False},
                    {"text": tokenizer.decode(first.answer_ids[1], skip_special_tokens=False), "trained": True}]
    answer_tokens = sum(sum(map(len, e.answer_ids)) for e in examples)
    return {
        "split": how, "train_records": round(len(train) * scale), "val_records": min(round(len(val) * scale),
                                                                                    cfg.max_val_records),
        "sampled_records": len(train), "estimated": scale > 1,
        "example": example, "example_text": "".join(s["text"] for s in example),
        "tokens_mean": round(statistics.fmean(lengths), 1), "tokens_median": statistics.median(lengths),
        "tokens_p95": sorted(lengths)[int(0.95 * (len(lengths) - 1))], "tokens_max": max(lengths),
        "truncated": round(counts["truncated"] * scale), "dropped": round(counts["dropped"] * scale),
        "max_seq_len": max_len, "batch_tokens": batch_tokens, "row_len": max_len,
        "batch_plan": [f"{'examples' if kto else 'pairs'} padded to the longest of their batch, up to "
                       f"{batch_tokens:,} tokens a micro-batch"],
        "supervised_tokens_per_epoch": round(answer_tokens * scale),
        "tokens_per_epoch": round(sum(len(e.prompt_ids) * len(e.answer_ids) for e in examples) * scale
                                  + answer_tokens * scale),
        "steps_per_epoch": steps_per_epoch, "planned_steps": planned,
        "seconds_per_step": round(per_micro * cfg.grad_accum, 3),
        "seconds_per_epoch": round(per_micro * len(epoch) * scale, 1),
        "seconds_planned": round(per_micro * cfg.grad_accum * planned, 1),
        "trainable_parameters": sum(p.numel() for p in trainable), "device": str(device), "notes": notes,
        "method": cfg.method,
    }


# ---------------------------------------------------------------- the maths

def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities per row (float32)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, -input_ids.shape[1]:][:, :-1].float()  # prompt tuning would prepend virtual tokens
    targets = input_ids[:, 1:]
    # gather minus logsumexp: no second vocabulary-wide tensor beside the logits (as log_softmax would make)
    token_logps = torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return (token_logps * completion_mask[:, 1:]).sum(-1)


def dpo_losses(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float,
               variant: str = "sigmoid", chosen_tokens=None, rejected_tokens=None):
    """(per-pair losses, chosen rewards, rejected rewards)."""
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if variant == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif variant == "ipo":
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"loss_variant: {variant!r} is not known; expected sigmoid or ipo")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def kto_losses(logps, ref_logps, labels, kl_logps, ref_kl_logps, *, beta: float, desirable_weight: float = 1.0,
               undesirable_weight: float = 1.0):
    """(per-example losses, rewards, the KL estimate z) in the batch's order."""
    z = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    ratio = logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio)))
    return torch.where(labels, good, bad), beta * ratio.detach(), z


class Stats:
    """Summed loss, rewards and counts over micro-batches: one step's or one validation's figures."""

    def __init__(self, device):
        self.t = torch.zeros(5, device=device)  # loss sum, correct, margin sum, chosen reward sum, rejected reward sum

    def add(self, loss_sum, correct, margin_sum, chosen_sum, rejected_sum) -> None:
        self.t += torch.stack([loss_sum.detach().float(), correct.float(), margin_sum.float(), chosen_sum.float(),
                               rejected_sum.float()])

    def figures(self, n: float, prefix: str = "") -> dict:
        loss, correct, margin, chosen, rejected = (float(x) / max(n, 1) for x in self.t)
        return {f"{prefix}loss": loss, f"{prefix}reward_accuracy": correct, f"{prefix}reward_margin": margin,
                f"{prefix}chosen_reward": chosen, f"{prefix}rejected_reward": rejected}


# ---------------------------------------------------------------- the recipe

class PreferenceRecipe(TrainingRecipe):
    """TrainingRecipe with preference data, a reference pass and the DPO or KTO loss; the loop, checkpoints,
    resume, early stopping, events and outputs are the supervised recipe's."""

    def setup(self) -> None:
        cfg = self.cfg
        if self.world > 1:
            raise ConfigError(f"method {cfg.method} trains on one device for now; run it without --nproc-per-node")
        self.device, self.dtype = self._device()
        torch.manual_seed(cfg.seed)
        (self.run_dir / CANCEL).unlink(missing_ok=True)
        self.events.emit("start", pid=__import__("os").getpid(), device=str(self.device),
                         dtype=str(self.dtype).removeprefix("torch."), world_size=1,
                         resumed=self._latest_checkpoint() is not None)
        records = read_preference_records(self.run_dir / RECORDS, cfg.method)
        train_records, val_records, how = D.split_records(records, val_fraction=cfg.val_fraction,
                                                          max_val_records=cfg.max_val_records, seed=cfg.seed)
        self.base_path = self._resolve_base([{"messages": r["prompt"] + a} for r in train_records
                                             for a in r["answers"]])
        self.tokenizer = load_tokenizer(self.base_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.model = self.peft_model = self._policy(load_base(self.base_path, cfg, self.device, self.dtype))
        cuda = self.device.type == "cuda"
        cfg = self.cfg = cfg.replace(max_seq_len=cfg.max_seq_len or (GPU_SEQ_LEN if cuda else CPU_SEQ_LEN),
                                     batch_tokens=cfg.batch_tokens or (GPU_BATCH_TOKENS if cuda else CPU_BATCH_TOKENS))
        self.train_examples, self.train_counts = tokenize_all(self.tokenizer, train_records, cfg.max_seq_len)
        self.val_examples, _ = tokenize_all(self.tokenizer, val_records, cfg.max_seq_len)
        if not self.train_examples or not self.val_examples:
            raise ConfigError(f"no training or validation example keeps an answer within max_seq_len "
                              f"({cfg.max_seq_len}); raise max_seq_len")
        self.val_batches = batches(self.val_examples, batch_tokens=cfg.batch_tokens, pad_id=self.pad_id, seed=0,
                                   epoch=0, shuffle=False, kl=self.kto)
        self.steps_per_epoch = max(1, len(self._epoch(0)) // cfg.grad_accum)
        self.total_steps = cfg.max_steps or max(1, math.ceil(self.steps_per_epoch * cfg.epochs))
        self.events.emit("data", split=how, train_records=len(train_records), val_records=len(val_records),
                         truncated=self.train_counts["truncated"], dropped=self.train_counts["dropped"],
                         supervised_tokens_per_epoch=sum(sum(map(len, e.answer_ids)) for e in self.train_examples),
                         steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps)
        self._optimizer()
        self._resume()
        self._write_manifest(how, len(train_records), len(val_records))
        from trainers.train import _Reporter

        self.reporter = _Reporter.create(cfg, self.run_dir)

    def _device(self):
        from trainers.train import pick_device

        device, dtype = pick_device(self.cfg)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device, dtype

    @property
    def kto(self) -> bool:
        return self.cfg.method == "kto"

    def _policy(self, base):
        """A fresh LoRA adapter (reference: the adapter off), or a finished run's adapter to go on training
        with a frozen copy of it as the reference."""
        start = self._start_adapter()
        if start is None:
            self.reference_adapter = None
            return wrap_peft(base, self.cfg.replace(method="lora", start_adapter=""))
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(start), is_trainable=True)
        model.load_adapter(str(start), adapter_name="reference", is_trainable=False)
        model.set_adapter("default")
        self.reference_adapter = "reference"
        return model

    def _start_adapter(self) -> Path | None:
        name = self.cfg.start_adapter.strip()
        if not name:
            return None
        for folder in (Path(name).expanduser(), self.run_dir.parent / name / "adapter"):
            if (folder / "adapter_config.json").exists():
                return folder.resolve()
        raise ConfigError(f"start_adapter: {name!r} is neither an adapter folder nor a finished run (no "
                          f"{self.run_dir.parent / name / 'adapter'}); name a completed run's id")

    def _optimizer(self) -> None:
        from transformers import get_scheduler

        cfg = self.cfg
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           fused=self.device.type == "cuda")
        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.lr_schedule]
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=min(cfg.warmup_steps, self.total_steps),
                                       num_training_steps=self.total_steps)
        self.trainable_params = sum(p.numel() for p in trainable)
        self.total_params = sum(p.numel() for p in self.model.parameters())

    def _epoch(self, epoch: int) -> list[dict]:
        return batches(self.train_examples, batch_tokens=self.cfg.batch_tokens, pad_id=self.pad_id,
                       seed=self.cfg.seed, epoch=epoch, kl=self.kto)

    # ------------------------------------------------------------ one batch

    @contextlib.contextmanager
    def reference(self):
        """The starting point: the adapter switched off, or the frozen copy of the starting adapter on."""
        if self.reference_adapter is None:
            with self.peft_model.disable_adapter():
                yield
            return
        self.peft_model.set_adapter(self.reference_adapter)
        try:
            yield
        finally:
            self.peft_model.set_adapter("default")

    def batch_loss(self, batch: dict) -> tuple[torch.Tensor, tuple]:
        """(summed loss over the batch's pairs or examples, the summed figures for Stats)."""
        cfg = self.cfg
        args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        with self._autocast():
            logps = sequence_logps(self.model, *args)
            with torch.no_grad(), self.reference():
                ref = sequence_logps(self.model, *args)
                if self.kto:
                    kl_args = (batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])
                    ref_kl = sequence_logps(self.model, *kl_args)
            if self.kto:
                with torch.no_grad():
                    kl = sequence_logps(self.model, *kl_args)
        if self.kto:
            labels = batch["label"]
            losses, rewards, _ = kto_losses(logps, ref, labels, kl, ref_kl, beta=cfg.beta,
                                            desirable_weight=cfg.kto_desirable_weight,
                                            undesirable_weight=cfg.kto_undesirable_weight)
            correct = torch.where(labels, rewards > 0, rewards < 0).sum()
            chosen_sum, rejected_sum = rewards[labels].sum(), rewards[~labels].sum()
            return losses.sum(), (losses.sum(), correct, chosen_sum - rejected_sum, chosen_sum, rejected_sum)
        n = logps.shape[0] // 2
        tokens = batch["completion_mask"][:, 1:].sum(-1)
        losses, chosen_r, rejected_r = dpo_losses(logps[:n], logps[n:], ref[:n], ref[n:], beta=cfg.beta,
                                                  variant=cfg.loss_variant, chosen_tokens=tokens[:n],
                                                  rejected_tokens=tokens[n:])
        margin = chosen_r - rejected_r
        return losses.sum(), (losses.sum(), (margin > 0).sum(), margin.sum(), chosen_r.sum(), rejected_r.sum())

    # ------------------------------------------------------------ the loop's hooks

    def _optimizer_step(self, micro_batches: list[dict]) -> tuple[float, int]:
        n = sum(int(b["n_pairs"]) for b in micro_batches)
        self.model.train()
        stats, tokens = Stats(self.device), 0
        for batch in micro_batches:
            batch = to_device(batch, self.device)
            tokens += int(batch["n_tokens"])
            loss, figures = self.batch_loss(batch)
            (loss / n).backward()
            stats.add(*figures)
        self._step_figures = stats.figures(n)
        value = self._step_figures["loss"]
        if not math.isfinite(value):
            raise TrainingError(f"the {self.cfg.method} loss became {value} at step {self.state.step + 1}; lower the "
                                f"learning rate (now {self.cfg.learning_rate:g}) or use precision fp32")
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                           self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, tokens

    def step_metrics(self) -> dict:
        figures = getattr(self, "_step_figures", {})
        return {k: round(v, 5) for k, v in figures.items() if k != "loss"}

    @torch.no_grad()
    def evaluate(self) -> bool:
        """Validation preference loss, reward accuracy and margin; True when early stopping says stop."""
        cfg, st = self.cfg, self.state
        self.model.eval()
        stats, n = Stats(self.device), 0
        for batch in self.val_batches:
            batch = to_device(batch, self.device)
            n += int(batch["n_pairs"])
            stats.add(*self.batch_loss(batch)[1])
        figures = stats.figures(n)
        val = figures["loss"]
        st.last_eval_step = st.step
        improved = val < st.best_val - cfg.early_stopping_min_delta
        if improved:
            st.best_val, st.best_step, st.bad_evals = val, st.step, 0
            self._save_adapter(self.run_dir / "best-adapter")
        else:
            st.bad_evals += 1
        self.events.emit("eval", step=st.step, val_loss=round(val, 6), best_val_loss=round(st.best_val, 6),
                         improved=improved, **{f"val_{k}": round(v, 5) for k, v in figures.items() if k != "loss"})
        self._report({"val/loss": val, "val/reward_accuracy": figures["reward_accuracy"],
                      "val/reward_margin": figures["reward_margin"]})
        return bool(cfg.early_stopping_patience) and st.bad_evals >= cfg.early_stopping_patience

    def _save_adapter(self, folder: Path) -> None:
        from workbench.core import files

        with files.atomic_path(folder) as tmp:  # the trained adapter only, not the frozen reference copy
            self.peft_model.save_pretrained(tmp, selected_adapters=["default"])


def recipe_for(run_dir: str | Path) -> TrainingRecipe:
    """The recipe a run's method needs: preference training for dpo and kto, supervised otherwise."""
    path = Path(run_dir).resolve()
    if (path / "config.json").exists() and read_run_config(path).method in PREFERENCE_METHODS:
        return PreferenceRecipe(path)
    return TrainingRecipe(path)


__all__ = ["PreferenceRecipe", "TrainConfig", "batches", "collate", "dpo_losses", "kto_losses", "recipe_for",
           "sequence_logps", "tokenize_record"]
