"""Template rendering, label masks, splits and packing (trainers.data), against the rendered text and plain
per-example computation."""

import math
import re

import pytest
import torch

from tests.trainers.test_trainer_fixtures import chat_records, one_thread, tiny_config
from trainers import data as D
from trainers import tiny
from trainers.train import loss_sum

SYSTEM_CHAT = {"messages": [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is my order ORD-1?"},
    {"role": "assistant", "content": "It ships today."},
    {"role": "user", "content": "Thanks! And the refund?"},
    {"role": "assistant", "content": "Refunds take 5 days.\nAnything else?"},
]}
# A Llama-3 style template (BOS text, headers, <|eot_id|>), to check the masks do not depend on ChatML.
LLAMA3_STYLE = ("{{ '<|endoftext|>' }}{% for m in messages %}<|im_start|>{{ m['role'] }}<|im_end|>\n\n"
                "{{ m['content'] | trim }}<|endoftext|>{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant<|im_end|>\n\n{% endif %}")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = one_thread()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    records = chat_records(60)
    return tiny.train_tokenizer(D.plain_texts(records + [SYSTEM_CHAT]), 400)


def trained_text(tok, ex: D.Example) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    runs, cur = [], []
    for tid, lab in zip(ex.input_ids, ex.labels):
        if lab != D.IGNORE:
            assert lab == tid  # labels are the token itself; the model shifts them
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_only_assistant_tokens_carry_labels_chatml(tokenizer):
    records = chat_records(5) + [SYSTEM_CHAT]
    examples, counts = D.tokenize(tokenizer, records, 4096)
    assert counts["truncated"] == 0 and len(examples) == len(records)
    for rec, ex in zip(records, examples):
        text = tokenizer.apply_chat_template(rec["messages"], tokenize=False)
        assert tokenizer.decode(ex.input_ids) == text  # nothing lost or added
        # The outside reference: in the rendered text, what follows each '<|im_start|>assistant\n' up to and
        # including its '<|im_end|>' (and the newline the template writes after it).
        expected = re.findall(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>\n)", text, flags=re.S)
        assert expected == [m["content"] + "<|im_end|>\n" for m in rec["messages"] if m["role"] == "assistant"]
        assert trained_text(tokenizer, ex) == expected


def test_labels_follow_another_template():
    tok = tiny.train_tokenizer(D.plain_texts([SYSTEM_CHAT]), 300)
    tok.chat_template = LLAMA3_STYLE
    (ex,), _ = D.tokenize(tok, [SYSTEM_CHAT], 4096)
    assert trained_text(tok, ex) == ["It ships today.<|endoftext|>", "Refunds take 5 days.\nAnything else?<|endoftext|>"]


def test_truncation_is_counted_and_empty_examples_dropped(tokenizer):
    records = chat_records(6)
    full, _ = D.tokenize(tokenizer, records, 4096)
    lengths = [len(e.input_ids) for e in full]
    cut = sorted(lengths)[2]
    examples, counts = D.tokenize(tokenizer, records, cut)
    assert counts["truncated"] == sum(n > cut for n in lengths)
    assert all(len(e.input_ids) <= cut for e in examples)
    # Cut inside the prompt: nothing left to learn, so the example is dropped.
    prompt_len = min(next(i for i, lab in enumerate(e.labels) if lab != D.IGNORE) for e in full)
    _, counts = D.tokenize(tokenizer, records, prompt_len - 1)
    assert counts["dropped"] == len(records)


def test_split_column_and_seeded_holdout():
    recs = [{"messages": [{"role": "user", "content": str(i)}, {"role": "assistant", "content": "x"}],
             "split": s} for i, s in enumerate(["train"] * 8 + ["val"] * 2 + ["test"] * 3)]
    train, val, how = D.split_records(recs, val_fraction=0.1, max_val_records=100, seed=1)
    assert (len(train), len(val), how) == (8, 2, "split column")
    plain = [{k: v for k, v in r.items() if k != "split"} for r in recs]
    a = D.split_records(plain, val_fraction=0.2, max_val_records=100, seed=1)
    b = D.split_records(plain, val_fraction=0.2, max_val_records=100, seed=1)
    assert a == b and len(a[1]) == round(13 * 0.2) and len(a[0]) + len(a[1]) == 13
    assert not {r["messages"][0]["content"] for r in a[0]} & {r["messages"][0]["content"] for r in a[1]}
    assert D.split_records(plain, val_fraction=0.2, max_val_records=100, seed=2)[1] != a[1]


def test_packing_fills_rows_and_restarts_positions(tokenizer):
    examples, _ = D.tokenize(tokenizer, chat_records(12), 4096)
    rows = D.pack(examples, 1024)
    assert sum(len(r.input_ids) for r in rows) == sum(len(e.input_ids) for e in examples)
    assert all(len(r.input_ids) <= 1024 for r in rows) and len(rows) < len(examples)
    for r in rows:
        starts = [i for i, p in enumerate(r.position_ids) if p == 0]
        bounds = starts + [len(r.input_ids)]
        assert all(r.position_ids[a:b] == list(range(b - a)) for a, b in zip(bounds, bounds[1:]))


def test_packed_loss_equals_unpacked_loss(tmp_path, tokenizer):
    """Each packed example attends only to itself: the packed loss equals the mean of the examples'
    losses computed one at a time (float32, 1e-4); without the position reset it does not."""
    cfg = tiny_config(tmp_path)
    model = tiny.random_model(cfg, tokenizer, seed=3).eval()
    with torch.no_grad():  # sharper random attention, so that a leak between examples shows in the loss
        for p in model.parameters():
            p.mul_(4.0)
    examples, _ = D.tokenize(tokenizer, chat_records(6), 4096)
    batches = D.epoch_batches(examples, batch_tokens=2048, max_len=1024, packed=True, seed=0, epoch=0,
                              pad_id=tokenizer.pad_token_id)
    assert all(b["input_ids"].shape[0] > 0 for b in batches)
    assert any(sum(1 for p in row.tolist() if p == 0) > 1 for b in batches for row in b["position_ids"])
    with torch.no_grad():
        packed = sum(float(loss_sum(model, b)) for b in batches) / sum(D.supervised_in(b) for b in batches)
        one_by_one_sum, n = 0.0, 0
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            logits = model(input_ids=ids).logits[0, :-1]
            target = torch.tensor(ex.labels[1:])
            one_by_one_sum += float(torch.nn.functional.cross_entropy(logits, target, ignore_index=-100,
                                                                      reduction="sum"))
            n += int((target != -100).sum())
        one_by_one = one_by_one_sum / n
        leaky = [dict(b, position_ids=torch.arange(b["input_ids"].shape[1]).expand_as(b["input_ids"])) for b in batches]
        contaminated = sum(float(loss_sum(model, b)) for b in leaky) / n
    assert math.isclose(packed, one_by_one, abs_tol=1e-4), (packed, one_by_one)
    assert abs(contaminated - one_by_one) > 1e-2, (contaminated, one_by_one)


def test_unpacked_batches_with_padding_match_too(tmp_path, tokenizer):
    cfg = tiny_config(tmp_path)
    model = tiny.random_model(cfg, tokenizer, seed=3).eval()
    examples, _ = D.tokenize(tokenizer, chat_records(6), 4096)
    with torch.no_grad():
        padded = D.epoch_batches(examples, batch_tokens=4096, max_len=1024, packed=False, seed=0, epoch=0,
                                 pad_id=tokenizer.pad_token_id)
        packed = D.epoch_batches(examples, batch_tokens=4096, max_len=1024, packed=True, seed=0, epoch=0,
                                 pad_id=tokenizer.pad_token_id)
        a = sum(float(loss_sum(model, b)) for b in padded) / sum(D.supervised_in(b) for b in padded)
        b = sum(float(loss_sum(model, b)) for b in packed) / sum(D.supervised_in(b) for b in packed)
    assert "attention_mask" in padded[0] and "attention_mask" not in packed[0]
    assert math.isclose(a, b, abs_tol=1e-4)


def test_fixed_shape_batches_pad_with_empty_rows_and_keep_every_label(tokenizer):
    """On a GPU every packed batch is (batch_tokens // max_len) x max_len: a compiled step is never
    compiled again at an epoch's short last batch; the empty rows carry no label and no token."""
    examples, _ = D.tokenize(tokenizer, chat_records(60, seed=4), 256)
    plain = D.epoch_batches(examples, batch_tokens=1024, max_len=256, packed=True, seed=0, epoch=0, pad_id=0)
    fixed = D.epoch_batches(examples, batch_tokens=1024, max_len=256, packed=True, seed=0, epoch=0, pad_id=0,
                            fixed_shape=True)
    assert {tuple(b["input_ids"].shape) for b in fixed} == {(4, 256)}
    assert plain[-1]["input_ids"].shape[0] < 4 or plain[-1]["input_ids"].shape[1] < 256  # the plain last batch is smaller
    for p, f in zip(plain, fixed):
        rows, width = p["labels"].shape
        assert torch.equal(f["labels"][:rows, :width], p["labels"]) and (f["labels"][rows:] == D.IGNORE).all()
        assert int(f["n_tokens"]) == int(p["n_tokens"]) and D.supervised_in(f) == D.supervised_in(p)
