"""From exported chat records to training batches: splits, the chat template, label masks, packing.

The run folder holds `data/records.jsonl` (the dataset version exported as chat JSONL, one
`{"messages": [...], ...extra columns}` object per line). Each record is rendered with the
tokenizer's chat template; only the assistant turns (their text and the end-of-turn marker)
carry labels, everything else is -100 (`trainers.supervision` decides which tokens: the one
definition, shared with token counting). Packing puts several examples into one row with
position ids that restart at 0 for each example: transformers turns restarting position ids
into a block-diagonal causal mask (SDPA, eager and flex attention) or varlen boundaries
(flash-attention), so no example attends to another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers import supervision
from trainers.config import ConfigError
from trainers.supervision import IGNORE

VAL_SPLITS = ("val", "validation", "valid", "dev", "eval")
LINE = "_line"  # a record's 0-based line in records.jsonl, set by read_records (the app maps it to the record's row)


# ---------------------------------------------------------------- records and splits

def read_records(path: str | Path, *, limit: int | None = None) -> list[dict]:
    """Chat records, one JSON object per line (the first `limit` lines only, when given), each with its
    0-based line under LINE; records without assistant text are skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and line_no > limit:
                break
            if not line.strip():
                continue
            rec = json.loads(line)
            messages = rec.get("messages")
            if not isinstance(messages, list) or not messages:
                if "chosen" in rec or "label" in rec and "completion" in rec:
                    raise ConfigError(f"{path}: a preference dataset; train it with method "
                                      f"{'dpo' if 'chosen' in rec else 'kto'} (it has no conversations for lora)")
                raise ConfigError(f"{path} line {line_no}: no `messages` list; export the version as chat")
            if not any(m.get("role") == "assistant" and (m.get("content") or "").strip() for m in messages):
                continue  # nothing to learn from (classification rows without a label, empty completions)
            rec[LINE] = line_no - 1
            records.append(rec)
    if not records:
        raise ConfigError(f"{path}: no record has an assistant response to train on")
    return records


def split_records(records: list[dict], *, val_fraction: float, max_val_records: int,
                  seed: int) -> tuple[list[dict], list[dict], str]:
    """(train, val, how): the `split` column when present, else a seeded holdout.

    With a split column, 'train' rows train and val/validation/dev rows validate (test rows are
    never touched); when there is no validation split, a seeded holdout of the train rows is used.
    """
    rng = random.Random(seed)
    if any("split" in r and r["split"] is not None for r in records):
        train = [r for r in records if str(r.get("split")).lower() == "train"]
        val = [r for r in records if str(r.get("split")).lower() in VAL_SPLITS]
        if not train:
            raise ConfigError("the dataset has a split column but no 'train' rows; make splits with `workbench split`")
        how = "split column"
        if not val:
            train, val = _holdout(train, val_fraction, rng)
            how = "split column (train) with a seeded holdout for validation"
    else:
        train, val = _holdout(records, val_fraction, rng)
        how = f"seeded holdout of {val_fraction:.0%}"
    if len(val) > max_val_records:
        val = rng.sample(val, max_val_records)
    return train, val, how


def _holdout(records: list[dict], fraction: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    if len(records) < 2:
        raise ConfigError(f"only {len(records)} record(s) to train on; a run needs at least 2 (one for validation)")
    order = list(range(len(records)))
    rng.shuffle(order)
    n_val = min(max(1, round(len(records) * fraction)), len(records) - 1)
    held = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


# ---------------------------------------------------------------- template and labels

def conversation(record: dict) -> list[dict]:
    """The record's messages as plain {role, content} dicts."""
    return [{"role": m["role"], "content": m.get("content") or ""} for m in record["messages"]]


def render(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(text, assistant character spans): `trainers.supervision.render_spans`, the one definition."""
    return supervision.render_spans(tokenizer, messages)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    record: int = -1  # its position in the records given to `tokenize`

    @property
    def supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def tokenize(tokenizer, records: list[dict], max_len: int) -> tuple[list[Example], dict]:
    """Examples (cut at max_len) and counts: records, truncated, dropped (no trained token left), tokens."""
    texts, all_spans = zip(*(render(tokenizer, conversation(r)) for r in records)) if records else ((), ())
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    examples, truncated, dropped, tokens = [], 0, 0, 0
    for i, (ids, offsets, text, spans) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], texts, all_spans)):
        labels = supervision.labels_for(ids, supervision.token_spans([a for a, _ in offsets], spans, len(text)))
        tokens += len(ids)
        cut = len(ids) > max_len
        if cut:
            truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        ex = Example(list(ids), labels, cut, i)
        if ex.supervised == 0:
            dropped += 1
            continue
        examples.append(ex)
    counts = {"records": len(records), "truncated": truncated, "dropped": dropped, "tokens": tokens,
              "supervised_tokens": sum(e.supervised for e in examples),
              "kept_tokens": sum(len(e.input_ids) for e in examples)}
    return examples, counts


# ---------------------------------------------------------------- packing and batches

@dataclass
class Row:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(examples: list[Example], max_len: int) -> list[Row]:
    """Greedy packing in the given order: fill a row until the next example does not fit."""
    rows, cur = [], Row([], [], [])
    for ex in examples:
        if cur.input_ids and len(cur.input_ids) + len(ex.input_ids) > max_len:
            rows.append(cur)
            cur = Row([], [], [])
        cur.input_ids += ex.input_ids
        cur.labels += ex.labels
        cur.position_ids += range(len(ex.input_ids))
    if cur.input_ids:
        rows.append(cur)
    return rows


def unpacked(examples: list[Example]) -> list[Row]:
    return [Row(list(e.input_ids), list(e.labels), list(range(len(e.input_ids)))) for e in examples]


def attended_pairs(position_ids: list[int]) -> int:
    """Causal query-key pairs of a row (trainers.flops counts attention by them): each position attends to
    itself and to what came before it in its own example (position ids restart at 0 for each example)."""
    return sum(position_ids) + len(position_ids)


def collate(rows: list[Row], pad_id: int, *, packed: bool, shape: tuple[int, int] | None = None) -> dict:
    """Right-padded tensors. Packed rows get no attention mask (the position ids carry the boundaries);
    padding continues as its own short sequence with labels -100. `shape` (rows, width): pad to it with
    empty rows, so every batch has one shape (a compiled step is not compiled again)."""
    if shape is not None:
        rows = rows + [Row([], [], []) for _ in range(shape[0] - len(rows))]
    width = shape[1] if shape is not None else max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        pos[i, :n] = torch.tensor(r.position_ids)
        pos[i, n:] = torch.arange(width - n)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "position_ids": pos,
             "n_tokens": torch.tensor(sum(len(r.input_ids) for r in rows)),
             "attended_pairs": torch.tensor(sum(attended_pairs(r.position_ids) for r in rows))}
    if not packed:
        batch["attention_mask"] = mask
    return batch


def epoch_batches(examples: list[Example], *, batch_tokens: int, max_len: int, packed: bool, seed: int,
                  epoch: int, pad_id: int, fixed_shape: bool = False) -> list[dict]:
    """One epoch's micro-batches in a seeded order (the same seed and epoch give the same batches).
    fixed_shape (packed rows, on a GPU): every batch is (batch_tokens // max_len) x max_len."""
    order = list(range(len(examples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    shuffled = [examples[i] for i in order]
    if packed:
        rows = pack(shuffled, max_len)
        per_batch = max(1, batch_tokens // max_len)
        groups = [rows[i: i + per_batch] for i in range(0, len(rows), per_batch)]
        if fixed_shape:
            return [collate(g, pad_id, packed=True, shape=(per_batch, max_len)) for g in groups]
    else:
        groups, cur, longest = [], [], 0
        for row in unpacked(shuffled):
            n = len(row.input_ids)
            if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
                groups.append(cur)
                cur, longest = [], 0
            cur.append(row)
            longest = max(longest, n)
        if cur:
            groups.append(cur)
    return [collate(g, pad_id, packed=packed) for g in groups]


def eval_batches(examples: list[Example], *, batch_tokens: int, max_len: int, packed: bool, pad_id: int,
                 fixed_shape: bool = False) -> list[dict]:
    """Validation batches in a fixed order."""
    return epoch_batches(examples, batch_tokens=batch_tokens, max_len=max_len, packed=packed, seed=0, epoch=0,
                         pad_id=pad_id, fixed_shape=fixed_shape)


def supervised_in(batch: dict) -> int:
    """Tokens that carry a loss in a batch (labels shifted by one: the first position never counts)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def plain_texts(records: list[dict]) -> Iterator[str]:
    """Every message's text as its own document, for training the tiny tokenizer and base: it learns the
    language of the data, not which answer follows which question (that is the adapter's job)."""
    for r in records:
        for m in r["messages"]:
            if m.get("content"):
                yield m["content"]
