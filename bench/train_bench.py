"""Training throughput: the stock Hugging Face Trainer + peft recipe against our recipe's training step.

Workload (issue 7): a Qwen2.5-0.5B-shaped model with random weights (hidden 896, 24 layers, 14 heads,
2 KV heads, intermediate 4864, vocab 151,936, tied embeddings), LoRA r=16 on all linear layers
(alpha 32, dropout 0.05), synthetic support-ticket examples (token ids; length lognormal around 175,
cut to 24..580; a prompt without labels then a supervised answer, about half of the tokens).

    python bench/train_bench.py                      # stock batch 8 and 32, then ours, one GPU
    torchrun --nproc-per-node 2 bench/train_bench.py --ours-only   # ours under DDP
    python bench/train_bench.py --tiny --steps 2 --warmup 1        # a dry run on a CPU

"stock" is transformers' Trainer with peft, padding each batch to its longest example (bf16, fused
AdamW, constant learning rate). "ours" is `trainers.train.TrainingRecipe._optimizer_step`, the
recipe's own step (packed rows, flex attention over each example's blocks, the supervised-only
chunked loss, compiled decoder layers, DDP under torchrun), fed by `trainers.data.epoch_batches`.
Every figure is supervised tokens per second (labels that carry a loss), timed after warm-up steps
(compilation is reported apart), with the peak GPU memory of the run. One JSON line per run too.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers import data as D  # noqa: E402
from trainers import fastloss  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.train import LoopState, TrainingRecipe, attention_implementation, wrap_peft  # noqa: E402

QWEN05 = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
              intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
              rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
            vocab_size=1000, max_position_embeddings=4096, tie_word_embeddings=True)


def ticket_examples(n: int, vocab: int, seed: int) -> list[D.Example]:
    """Token-id examples shaped like support tickets: mean ~175 tokens, max 580, about half supervised."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(math.log(170), 0.42, n), 24, 580).astype(int)
    out = []
    for length in lengths:
        ids = rng.integers(10, vocab, int(length)).tolist()
        cut = int(length * rng.uniform(0.3, 0.7))
        out.append(D.Example(ids, [D.IGNORE] * cut + ids[cut:], False))
    return out


def build_model(shape: dict, attn: str, device: torch.device, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**shape, attn_implementation=attn)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype)


def lora_config(**kw) -> TrainConfig:
    return TrainConfig(lora_rank=16, lora_alpha=32.0, lora_dropout=0.05, target_modules="all-linear",
                       learning_rate=2e-4, lr_schedule="constant", warmup_steps=0, **kw)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch._dynamo.reset()


# ---------------------------------------------------------------- stock: HF Trainer + peft, padded batches

def run_stock(args, examples, device, dtype, batch_size: int) -> dict:
    import peft
    from transformers import Trainer, TrainerCallback, TrainingArguments

    reset(device)
    model = build_model(args.shape, "sdpa", device, dtype)
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                       target_modules="all-linear", task_type="CAUSAL_LM"))
    data = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    supervised = []

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), D.IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        supervised.append(int((labels[:, 1:] != D.IGNORE).sum()))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync(device)
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch_size,
                                  max_steps=args.warmup + args.steps, learning_rate=2e-4, lr_scheduler_type="constant",
                                  bf16=device.type == "cuda", optim="adamw_torch_fused" if device.type == "cuda"
                                  else "adamw_torch", max_grad_norm=1.0, logging_steps=10**6, save_strategy="no",
                                  report_to=[], dataloader_num_workers=0, disable_tqdm=True, use_cpu=device.type != "cuda",
                                  seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate, callbacks=[Clock()])
        trainer.train()
    elapsed = times[-1] - times[args.warmup - 1]
    per_batch = sum(supervised) / len(supervised)
    result = {"run": f"stock HF Trainer+peft, padded, batch {batch_size}", "world": 1,
              "supervised_tok_s": round(per_batch * args.steps / elapsed), "peak_gb": peak_gb(device),
              "step_s": round(elapsed / args.steps, 4)}
    del trainer, model
    return result


# ---------------------------------------------------------------- TRL: SFTTrainer, BFD packing, padding-free, Liger

def bench_tokenizer(vocab: int):
    """A word-level tokenizer over the model's vocabulary: TRL wants a processing class; the data is already ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab_map = {f"t{i}": i for i in range(vocab)}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab_map, unk_token="t1")))
    fast.pad_token, fast.eos_token, fast.unk_token = "t0", "t2", "t1"
    return fast


def run_trl(args, examples, device, dtype, rows: int, checkpointing: bool = True) -> dict:
    """The strongest stock recipe a user would pick: TRL's SFTTrainer with best-fit-decreasing packing
    (padding-free rows of --max-len tokens, `rows` of them a step, as many tokens as ours at 4 x 4096) and
    Liger's kernels on CUDA, on the same model, LoRA and examples as ours. TRL turns gradient checkpointing on
    by default (its SFTConfig); `checkpointing=False` is the faster setting for a model this size.
    Liger patches the model classes process-wide, so the TRL runs go in a process of their own (--trl-rows
    runs nothing else)."""
    import peft
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    reset(device)
    attn = "flex_attention" if device.type == "cuda" else "sdpa"
    model = build_model(args.shape, attn, device, dtype)
    data = Dataset.from_dict({"input_ids": [e.input_ids for e in examples], "labels": [e.labels for e in examples]})
    times, supervised = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync(device)
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(output_dir=tmp, per_device_train_batch_size=rows, max_length=args.max_len, packing=True,
                        packing_strategy="bfd", padding_free=True, use_liger_kernel=device.type == "cuda",
                        gradient_checkpointing=checkpointing,
                        max_steps=args.warmup + args.steps, learning_rate=2e-4, lr_scheduler_type="constant",
                        bf16=device.type == "cuda", optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
                        max_grad_norm=1.0, logging_steps=10**6, save_strategy="no", report_to=[],
                        dataloader_num_workers=0, disable_tqdm=True, use_cpu=device.type != "cuda", seed=0)
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=bench_tokenizer(
            args.shape["vocab_size"]), peft_config=peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                                   target_modules="all-linear", task_type="CAUSAL_LM"),
            callbacks=[Clock()])
        collate = trainer.data_collator

        def counting(rows_):
            batch = collate(rows_)
            supervised.append(int((batch["labels"][..., 1:] != D.IGNORE).sum()))
            return batch

        trainer.data_collator = counting
        trainer.train()
    elapsed = times[-1] - times[args.warmup - 1]
    per_batch = sum(supervised) / len(supervised)
    result = {"run": f"TRL SFTTrainer+peft, BFD packing {rows}x{args.max_len}, padding-free, {attn}"
              + (", Liger kernels" if device.type == "cuda" else "")
              + ("" if checkpointing else ", no gradient checkpointing"), "world": 1,
              "supervised_tok_s": round(per_batch * args.steps / elapsed), "peak_gb": peak_gb(device),
              "step_s": round(elapsed / args.steps, 4)}
    del trainer, model
    return result


# ---------------------------------------------------------------- ours: the recipe's step on packed rows

class BenchRecipe(TrainingRecipe):
    """The recipe with its model built in memory (no run folder); the step is TrainingRecipe's own."""

    def __init__(self, cfg: TrainConfig, model, device, dtype, world: int, rank: int):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.world, self.rank, self.main = world, rank, rank == 0
        self.state = LoopState()
        self.model = wrap_peft(model, cfg)  # as setup(): adapter, GPU speed-ups, DDP, fused AdamW
        self.peft_model = self.model
        self.compiled_layers = fastloss.prepare(self.model, cfg, device)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                           fused=device.type == "cuda")
        from transformers import get_scheduler

        self.scheduler = get_scheduler("constant_with_warmup", self.optimizer, num_warmup_steps=0,
                                       num_training_steps=10**6)


def run_ours(args, examples, device, dtype, world, rank, *, batch_tokens: int, compile_: bool, attn: str | None = None,
             label: str = "") -> dict:
    reset(device)
    os.environ["WORKBENCH_COMPILE"] = "1" if compile_ else "0"
    cfg = lora_config(max_seq_len=args.max_len, batch_tokens=batch_tokens, packing=True)
    attn = attn or attention_implementation(device, packed=True)
    recipe = BenchRecipe(cfg, build_model(args.shape, attn, device, dtype), device, dtype, world, rank)
    batches = D.epoch_batches(examples, batch_tokens=batch_tokens, max_len=args.max_len, packed=True, seed=0, epoch=0,
                              pad_id=0)
    need = (args.warmup + args.steps) * world
    if len(batches) < need:
        raise SystemExit(f"only {len(batches)} micro-batches for {need}; raise --examples")
    t_start = time.perf_counter()
    marks, supervised, losses = [], [], []
    for step in range(args.warmup + args.steps):
        group = batches[step * world: (step + 1) * world]
        loss, _ = recipe._optimizer_step(group[rank::world])
        losses.append(loss)
        supervised.append(sum(D.supervised_in(b) for b in group))  # all ranks' micro-batches
        sync(device)
        marks.append(time.perf_counter())
    elapsed = marks[-1] - marks[args.warmup - 1]
    rows, width = batches[0]["input_ids"].shape
    loss_kind = "chunked supervised CE" if device.type == "cuda" else "plain CE"
    result = {"run": label or f"ours: packed {rows}x{width}, {attn}, " + loss_kind
              + (", compiled layers" if recipe.compiled_layers else ", eager layers"),
              "world": world, "supervised_tok_s": round(sum(supervised[args.warmup:]) / elapsed),
              "peak_gb": peak_gb(device), "step_s": round(elapsed / args.steps, 4),
              "warmup_s": round(marks[args.warmup - 1] - t_start, 1), "compiled_layers": recipe.compiled_layers,
              "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
              "tokens_per_row_packed": round(sum(int(b["n_tokens"]) for b in batches) / sum(
                  b["input_ids"].shape[0] for b in batches))}
    del recipe
    return result


def report(result: dict, main: bool, log: Path | None):
    if not main:
        return
    print(json.dumps(result), flush=True)
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


def prepare_run(folder: str, records: int = 400) -> None:
    """A run folder for an end-to-end check of the entry point (`[torchrun ...] -m trainers.train FOLDER`):
    demo support tickets as chat records, the offline tiny base, a short run with evaluations and checkpoints."""
    from trainers.config import save_config
    from workbench.data.demo import generate_tickets

    run = Path(folder)
    (run / "data").mkdir(parents=True, exist_ok=True)
    with open(run / "data" / "records.jsonl", "w", encoding="utf-8") as f:
        for t in generate_tickets(records, seed=3):
            f.write(json.dumps({"messages": [{"role": "user", "content": t["prompt"]},
                                             {"role": "assistant", "content": t["completion"]}]}) + "\n")
    save_config(TrainConfig(base_model="tiny", tiny_dir=str(run / "tiny"), tiny_pretrain_steps=20, max_steps=30,
                            batch_tokens=4096, max_seq_len=1024, eval_every=10, checkpoint_every=10, warmup_steps=2),
                run / "config.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny model (CPU dry run)")
    p.add_argument("--examples", type=int, default=8000)
    p.add_argument("--steps", type=int, default=20, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps first (compilation happens here)")
    p.add_argument("--max-len", type=int, default=4096, help="packed row length")
    p.add_argument("--batch-tokens", default="16384", help="ours: tokens per micro-batch, comma-separated for several")
    p.add_argument("--stock-batches", default="8,32", help="stock: batch sizes to run ('' for none)")
    p.add_argument("--trl-checkpointing", default="1,0",
                   help="TRL runs with gradient checkpointing on (1, TRL's default) and/or off (0)")
    p.add_argument("--ours-only", action="store_true", help="skip the stock runs (as under torchrun)")
    p.add_argument("--trl-rows", default="",
                   help="TRL SFTTrainer with BFD packing: packed rows per step ('' for none); runs only TRL (Liger "
                        "patches model classes process-wide: run ours in another process)")
    p.add_argument("--ablations", action="store_true", help="also ours without compile and with SDPA")
    p.add_argument("--jsonl", help="append the JSON lines to this file")
    p.add_argument("--prepare-run", metavar="DIR", help="only write a run folder for an end-to-end trainer check")
    args = p.parse_args(argv)
    if args.prepare_run:
        prepare_run(args.prepare_run)
        return 0
    args.shape = TINY if args.tiny else QWEN05

    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    cuda = torch.cuda.is_available()
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if cuda else torch.float32
    log = Path(args.jsonl) if args.jsonl else None
    main_rank = rank == 0

    examples = ticket_examples(args.examples, args.shape["vocab_size"], seed=1)
    lengths = [len(e.input_ids) for e in examples]
    sup = sum(e.supervised for e in examples) / sum(lengths)
    report({"device": torch.cuda.get_device_name(device) if cuda else "cpu", "world": world, "torch": torch.__version__,
            "examples": len(examples), "mean_len": round(float(np.mean(lengths)), 1), "max_len": max(lengths),
            "supervised_share": round(sup, 3)}, main_rank, log)

    results = []
    if not args.ours_only and world == 1:
        for bs in [int(b) for b in args.stock_batches.split(",") if b]:
            results.append(run_stock(args, examples, device, dtype, bs))
            report(results[-1], main_rank, log)
        for rows in [int(r) for r in args.trl_rows.split(",") if r]:
            for checkpointing in [c == "1" for c in args.trl_checkpointing.split(",")]:
                results.append(run_trl(args, examples, device, dtype, rows, checkpointing))
                report(results[-1], main_rank, log)
    for bt in [int(b) for b in args.batch_tokens.split(",")] if not args.trl_rows else []:
        results.append(run_ours(args, examples, device, dtype, world, rank, batch_tokens=bt, compile_=cuda))
        report(results[-1], main_rank, log)
    if args.ablations:
        bt = int(args.batch_tokens.split(",")[0])
        results.append(run_ours(args, examples, device, dtype, world, rank, batch_tokens=bt, compile_=False))
        report(results[-1], main_rank, log)
        results.append(run_ours(args, examples, device, dtype, world, rank, batch_tokens=bt, compile_=cuda, attn="sdpa",
                                label="ours with SDPA (dense block-diagonal mask) instead of flex"))
        report(results[-1], main_rank, log)
    if main_rank:
        stock = [r for r in results if r["run"].startswith(("stock", "TRL"))]
        best_stock = max((r["supervised_tok_s"] for r in stock), default=None)
        print(f"\n{'run':78s} {'world':>5s} {'sup tok/s':>10s} {'peak GB':>8s} {'vs best stock':>13s}")
        for r in results:
            ratio = f"{r['supervised_tok_s'] / best_stock:.2f}x" if best_stock else "-"
            print(f"{r['run'][:78]:78s} {r['world']:5d} {r['supervised_tok_s']:10d} {str(r['peak_gb']):>8s} {ratio:>13s}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
