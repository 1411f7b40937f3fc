"""The offline `tiny` base model: a small Llama-shaped transformer and a BPE tokenizer, both built
from the project's own text, briefly pre-trained in full and cached as an ordinary model folder.

LoRA on random weights learns slowly, so the base first learns the language of the data
(plain text, no chat markers) for `tiny_pretrain_steps` steps; LoRA then adapts it to the chat
task, as it would adapt a real pre-trained model. The folder is saved with `save_pretrained`
and every later use loads it with `from_pretrained`, the code path of a real model. One tiny
base per project (built from the first training split it is asked for), so runs on different
dataset versions start from the same base and stay comparable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from trainers.config import ConfigError, TrainConfig
from workbench.core import jobs  # the one pid-liveness check (psutil); it never opens the store

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PRETRAIN_SEQ_LEN = 256
PRETRAIN_LR = 3e-3
MANIFEST = "tiny.json"


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (no unknown tokens) with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import trainers as bpe_trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = bpe_trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def model_config(cfg: TrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.tiny_width, intermediate_size=4 * cfg.tiny_width,
        num_hidden_layers=cfg.tiny_layers, num_attention_heads=cfg.tiny_heads, num_key_value_heads=cfg.tiny_heads,
        max_position_embeddings=4096, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD))


def random_model(cfg: TrainConfig, tokenizer, seed: int = 0):
    """The tiny architecture with fresh random weights (pre-flight timing, tests)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(model_config(cfg, tokenizer))


def pretrain(model, tokenizer, texts: list[str], *, steps: int, batch_tokens: int, seed: int,
             progress: Callable[[int, int, float], None] | None = None) -> float:
    """Full-weight language-model training on plain text joined by the pad token; returns the last loss."""
    ids: list[int] = []
    pad = tokenizer.convert_tokens_to_ids(PAD)
    for row in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += row + [pad]
    seq = PRETRAIN_SEQ_LEN
    n_rows = len(ids) // seq
    if n_rows < 1:
        raise ConfigError("too little text to pre-train the tiny base; import more records")
    data = torch.tensor(ids[: n_rows * seq]).view(n_rows, seq)
    rows_per_batch = max(1, min(batch_tokens // seq, n_rows))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        batch = data[torch.randint(0, n_rows, (rows_per_batch,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    model.eval()
    return loss_value


def corpus_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def ensure_tiny(cfg: TrainConfig, texts: list[str], *, progress: Callable[[int, int, float], None] | None = None,
                wait_s: float = 3600) -> Path:
    """The cached tiny base folder, built (tokenizer, weights, pre-training) when it is not there yet.

    Concurrent runs take a lock file; the loser waits for the winner's folder.
    """
    if not cfg.tiny_dir:
        raise ConfigError("tiny_dir is not set; start the run from the app or `workbench train`")
    target = Path(cfg.tiny_dir)
    lock = target.with_name(target.name + ".lock")
    deadline = time.monotonic() + wait_s
    while not (target / MANIFEST).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _holder_alive(lock):
                lock.unlink(missing_ok=True)
            elif time.monotonic() > deadline:
                raise ConfigError(f"waited too long for another run to build the tiny base ({lock})") from None
            time.sleep(1.0)
            continue
        try:
            os.write(fd, jobs.current().to_text().encode())
            os.close(fd)
            if not (target / MANIFEST).exists():
                build_tiny(cfg, texts, target, progress=progress)
        finally:
            lock.unlink(missing_ok=True)
    return target


def _holder_alive(lock: Path) -> bool:
    """Whether the process that wrote the lock still runs (its pid and start time: a reused pid is not it)."""
    try:
        text = lock.read_text()
        written = lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if not text.strip():  # created, its holder not written yet: give the winner a moment
        return time.time() - written < 30
    return jobs.alive(jobs.Job.from_text(text))


def build_tiny(cfg: TrainConfig, texts: list[str], target: Path, *,
               progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Tokenizer + random weights + pre-training, saved atomically as a from_pretrained folder."""
    start = time.monotonic()
    tokenizer = train_tokenizer(texts, cfg.tiny_vocab)
    model = random_model(cfg, tokenizer, seed=cfg.seed)
    final = pretrain(model, tokenizer, texts, steps=cfg.tiny_pretrain_steps, batch_tokens=cfg.batch_tokens,
                     seed=cfg.seed, progress=progress) if cfg.tiny_pretrain_steps else float("nan")
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END)]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {"kind": "workbench tiny base", "corpus_sha256": corpus_hash(texts), "documents": len(texts),
            "pretrain_steps": cfg.tiny_pretrain_steps, "final_pretrain_loss": final,
            "seconds": round(time.monotonic() - start, 1), "layers": cfg.tiny_layers, "width": cfg.tiny_width,
            "heads": cfg.tiny_heads, "vocab": len(tokenizer), "seed": cfg.seed}
    (tmp / MANIFEST).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
