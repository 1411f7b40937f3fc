"""Preference training (trainers.preference): our DPO and KTO losses equal TRL's DPOTrainer and KTOTrainer on the
same tiny model, batch and beta (float32); with the policy equal to the reference the DPO loss is log 2; and a
short CPU run on pairs where the chosen answer names the customer's order number raises the held-out reward
accuracy far above chance, starting again from its own adapter keeps the reference at the starting point."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from tests.trainers.test_trainer_fixtures import one_thread, tiny_config, write_records
from trainers import preference as P
from trainers.config import ConfigError, save_config
from trainers.train import main as train_main
from workbench.data.demo import generate_tickets

PAIRS = [
    {"prompt": [{"role": "user", "content": "Where is my order ORD-12345?"}],
     "chosen": [{"role": "assistant", "content": "Order ORD-12345 ships today."}],
     "rejected": [{"role": "assistant", "content": "No idea."}]},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund please"}],
     "chosen": [{"role": "assistant", "content": "Done, the refund is on its way."}],
     "rejected": [{"role": "assistant", "content": "Maybe later."}]},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "My card is blocked"}],
     "chosen": [{"role": "assistant", "content": "I have unblocked your card."}],
     "rejected": [{"role": "assistant", "content": "Try again tomorrow, or not."}]},
]


@pytest.fixture(scope="module")
def tiny():
    """A tokenizer and a 2-layer Llama base, built from the pairs' text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.tiny import train_tokenizer

    before = one_thread()
    torch.manual_seed(0)
    texts = [m["content"] for p in PAIRS for k in ("prompt", "chosen", "rejected") for m in p[k]] * 10
    tok = train_tokenizer(texts, 400)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                        pad_token_id=tok.pad_token_id))
    yield tok, base
    torch.set_num_threads(before)


def recipe_on(model, method: str = "dpo", reference: str | None = None, **cfg) -> P.PreferenceRecipe:
    """A PreferenceRecipe around an in-memory model: only what batch_loss reads."""
    from trainers.config import TrainConfig

    r = P.PreferenceRecipe.__new__(P.PreferenceRecipe)
    r.cfg = TrainConfig(method=method, **cfg)
    r.model = r.peft_model = model
    r.reference_adapter = reference
    r.device, r.dtype = torch.device("cpu"), torch.float32
    return r


def lora(base, seed: int, random_b: bool):
    import copy

    import peft

    torch.manual_seed(seed)
    return peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=not random_b))


def perturb(model, adapter: str = "default") -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f"lora_B.{adapter}" in name:
                p.add_(torch.randn_like(p) * 0.5)


def test_step_zero_dpo_loss_is_exactly_log_2(tiny):
    tok, base = tiny
    model = lora(base, 1, random_b=False)  # a fresh adapter: the policy is the reference
    examples = [P.tokenize_record(tok, {"prompt": p["prompt"], "answers": [p["chosen"], p["rejected"]],
                                        "label": True}) for p in PAIRS]
    batch = P.collate(examples, tok.pad_token_id)
    loss, (_, correct, margin, _, _) = recipe_on(model, beta=0.1).batch_loss(batch)
    assert float(loss.detach() / len(PAIRS)) == float(torch.tensor(math.log(2)))
    assert (int(correct), float(margin)) == (0, 0.0)


@pytest.mark.parametrize("variant", ["sigmoid", "ipo"])
def test_dpo_loss_equals_trls_dpo_trainer(tiny, tmp_path, variant):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok, base = tiny
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=[variant], report_to="none",
                     per_device_train_batch_size=3, use_cpu=True, bf16=False, fp16=False, dataset_num_proc=None)
    trainer = DPOTrainer(model=lora(base, 2, random_b=True), args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=tok)
    model = trainer.model  # retraining an existing adapter: TRL keeps its first state as the 'ref' adapter
    assert "ref" in model.peft_config
    perturb(model)  # the policy moves away from the reference
    model.eval()
    theirs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, theirs))
        ours = P.collate([P.tokenize_record(tok, {"prompt": p["prompt"], "answers": [p["chosen"], p["rejected"]],
                                                  "label": True}) for p in PAIRS], tok.pad_token_id)
        assert torch.equal(ours["input_ids"], theirs["input_ids"])  # the same batch, built by our tokenizer
        assert torch.equal(ours["completion_mask"], theirs["completion_mask"])
        loss, _ = recipe_on(model, reference="ref", beta=0.3, loss_variant=variant).batch_loss(ours)
    assert abs(trl_loss - math.log(2)) > 1e-3
    assert float(loss) / len(PAIRS) == pytest.approx(trl_loss, abs=1e-5)


def test_kto_loss_equals_trls_kto_trainer(tiny, tmp_path):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    tok, base = tiny
    rows = [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"} for p in PAIRS
            for k in ("chosen", "rejected")]
    args = KTOConfig(output_dir=str(tmp_path), beta=0.2, desirable_weight=1.5, undesirable_weight=0.7,
                     report_to="none", per_device_train_batch_size=len(rows), use_cpu=True, bf16=False, fp16=False)
    trainer = KTOTrainer(model=lora(base, 3, random_b=True), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    model = trainer.model
    perturb(model)
    model.eval()
    theirs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, theirs))
        ours = P.collate([P.tokenize_record(tok, {"prompt": r["prompt"], "answers": [r["completion"]],
                                                  "label": r["label"]}) for r in rows], tok.pad_token_id, kl=True)
        assert torch.equal(ours["input_ids"], theirs["input_ids"][:, : ours["input_ids"].shape[1]])
        assert torch.equal(ours["kl_input_ids"], theirs["KL_input_ids"][:, : ours["kl_input_ids"].shape[1]])
        loss, _ = recipe_on(model, "kto", reference="ref", beta=0.2, kto_desirable_weight=1.5,
                            kto_undesirable_weight=0.7).batch_loss(ours)
    assert float(loss) / len(rows) == pytest.approx(trl_loss, abs=1e-5)


# ---------------------------------------------------------------- a run through `python -m trainers.train`

ANSWERS = ["I've checked order {o} and it is on its way.", "Order {o} left our depot this morning.",
           "Thanks, I found order {o}; it arrives on Friday."]


def rule_pairs(n: int) -> list[dict]:
    """Pairs where the chosen answer names the order number from the prompt and the rejected one does not."""
    out = []
    for k, t in enumerate(generate_tickets(3 * n, seed=11)):
        found = re.search(r"[^.?!\n]*order (ORD-\d+)[^.?!\n]*[.?!]", t["prompt"])
        if found:
            answer = ANSWERS[k % len(ANSWERS)]
            out.append({"prompt": [{"role": "user", "content": found.group(0).strip()}],
                        "chosen": [{"role": "assistant", "content": answer.format(o=found.group(1))}],
                        "rejected": [{"role": "assistant", "content": answer.format(o="your order").replace(
                            "order your order", "your order")}]})
    return out[:n]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    before = one_thread()
    root = tmp_path_factory.mktemp("dpo")
    run_dir = root / "runs" / "dpo1"
    pairs = rule_pairs(160)
    write_records(run_dir / "data" / "records.jsonl", [{**p, "split": "validation" if i % 5 == 0 else "train"}
                                                       for i, p in enumerate(pairs)])
    cfg = tiny_config(root, method="dpo", beta=0.1, max_steps=30, learning_rate=3e-3, eval_every=10,
                      checkpoint_every=15, tiny_pretrain_steps=20, max_seq_len=128, batch_tokens=2048)
    save_config(cfg, run_dir / "config.json")
    assert train_main([str(run_dir)]) == 0
    yield run_dir, cfg, [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    torch.set_num_threads(before)


@pytest.mark.slow
def test_a_dpo_run_learns_the_rule_on_held_out_pairs(dpo_run):
    run_dir, cfg, events = dpo_run
    evals = [e for e in events if e["type"] == "eval"]
    steps = [e for e in events if e["type"] == "step"]
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "completed" and end["step"] == 30, end
    assert evals[0]["step"] == 0 and evals[0]["val_loss"] == round(math.log(2), 6)  # the policy is the reference
    assert evals[0]["val_reward_accuracy"] == 0 and evals[0]["val_reward_margin"] == 0
    assert evals[-1]["val_reward_accuracy"] >= 0.9, evals  # chance is 0.5
    assert evals[-1]["val_reward_margin"] > 0 and evals[-1]["val_loss"] < 0.6
    assert {"reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"} <= set(steps[-1])
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000015", "step-0000030"]


@pytest.mark.slow
def test_a_run_from_a_finished_adapter_keeps_that_adapter_as_its_reference(dpo_run):
    run_dir, cfg, _ = dpo_run
    second = run_dir.parent / "dpo2"
    (second / "data").mkdir(parents=True)
    (second / "data" / "records.jsonl").write_bytes((run_dir / "data" / "records.jsonl").read_bytes())
    save_config(cfg.replace(start_adapter="dpo1", max_steps=2, eval_every=2, checkpoint_every=2), second / "config.json")
    assert train_main([str(second)]) == 0
    events = [json.loads(line) for line in (second / "events.jsonl").read_text().splitlines()]
    first_eval = next(e for e in events if e["type"] == "eval")
    assert first_eval["val_loss"] == round(math.log(2), 6)  # reference = the starting adapter, not the base
    assert not (second / "adapter" / "reference").exists()  # only the trained adapter is saved
    with pytest.raises(ConfigError, match="start_adapter is for methods dpo and kto"):
        cfg.replace(method="lora", start_adapter="dpo1")


@pytest.mark.slow
def test_a_killed_dpo_run_resumes_from_its_checkpoint_with_the_same_losses(dpo_run):
    import shutil

    run_dir, cfg, _ = dpo_run
    folder = run_dir.parent / "dpo3"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "records.jsonl").write_bytes((run_dir / "data" / "records.jsonl").read_bytes())
    save_config(cfg.replace(max_steps=4, eval_every=2, checkpoint_every=2), folder / "config.json")
    assert train_main([str(folder)]) == 0
    first = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    shutil.rmtree(folder / "checkpoints" / "step-0000004")  # as if killed after the checkpoint of step 2
    (folder / "events.jsonl").unlink()
    assert train_main([str(folder)]) == 0
    again = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert next(e for e in again if e["type"] == "resume")["step"] == 2
    losses = [[e["loss"] for e in events if e["type"] == "step" and e["step"] > 2] for events in (first, again)]
    assert len(losses[1]) == 2 and losses[1] == pytest.approx(losses[0], abs=1e-4)
    assert again[-1]["status"] == "completed" and again[-1]["step"] == 4


def copy_run(run_dir, name: str, cfg, records=None):
    folder = run_dir.parent / name
    (folder / "data").mkdir(parents=True)
    if records is None:
        (folder / "data" / "records.jsonl").write_bytes((run_dir / "data" / "records.jsonl").read_bytes())
    else:
        write_records(folder / "data" / "records.jsonl", records)
    save_config(cfg, folder / "config.json")
    return folder


@pytest.mark.slow
def test_a_kto_run_and_early_stopping_on_the_validation_loss(dpo_run):
    run_dir, cfg, _ = dpo_run
    pairs = [json.loads(line) for line in (run_dir / "data" / "records.jsonl").read_text().splitlines()]
    unpaired = [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen", "split": p["split"]}
                for p in pairs for k in ("chosen", "rejected")]
    kto = copy_run(run_dir, "kto1", cfg.replace(method="kto", max_steps=4, eval_every=2, checkpoint_every=4,
                                                kto_desirable_weight=1.2, max_val_records=1000), unpaired)
    assert train_main([str(kto)]) == 0
    events = [json.loads(line) for line in (kto / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["type"] == "eval"]
    assert events[-1]["status"] == "completed" and [e["step"] for e in evals] == [0, 2, 4]
    assert evals[0]["val_loss"] == pytest.approx((1.2 + 1.0) / 2 * 0.5, abs=1e-6)  # 1 - sigmoid(0) per example
    last_step = [e for e in events if e["type"] == "step"][-1]
    assert "val_reward_accuracy" in evals[-1] and "reward_margin" in last_step
    # a validation loss that must fall by more than 10 never improves: the run stops at its first evaluation
    stop = copy_run(run_dir, "dpo-stop", cfg.replace(max_steps=10, eval_every=2, early_stopping_patience=1,
                                                     early_stopping_min_delta=10.0))
    assert train_main([str(stop)]) == 0
    end = json.loads((stop / "events.jsonl").read_text().splitlines()[-1])
    assert (end["status"], end["step"]) == ("stopped early", 2)
