"""Evaluation bookkeeping without a model: how long ingesting, scoring, slicing, comparing and finding
training neighbours take on banking77 (3,080 test items, 10,003 training records).

    python bench/evaluate_bench.py [--items N]

The answers are written into outputs.jsonl as the generator writes them: for a classification
run the predicted label (right about 80% of the time), for a generation run (banking77 texts as
prompt and reference) the reference with words dropped. Prints one JSON object of timings; the
`gen_*_ahead*` figures are the CLI's scoring while the answers arrive (all but the last 500 computed ahead).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from workbench.core.store import Store  # noqa: E402
from workbench.core.versions import write_version  # noqa: E402
from workbench.models import compare, eval_scores, eval_setup, evaluation, neighbours, slices  # noqa: E402

SHARED = Path(os.environ.get("WORKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 3)


def banking(store: Store, n_test: int | None):
    train = pacsv.read_csv(SHARED / "banking77" / "train.csv")
    test = pacsv.read_csv(SHARED / "banking77" / "test.csv")
    if n_test:
        test = test.slice(0, n_test)
    texts = train.column("text").to_pylist() + test.column("text").to_pylist()
    cats = train.column("category").to_pylist() + test.column("category").to_pylist()
    split = ["train"] * train.num_rows + ["test"] * test.num_rows
    classification = pa.table({"prompt": texts, "category": cats, "split": split})
    write_version(store, "banking", [classification], kind="import", fmt="classification", recipe={},
                  info={"label_column": "category"})
    # A generation task from the same texts: the "answer" is the text itself with its category prefixed.
    generation = pa.table({"prompt": texts, "completion": [f"{c.replace('_', ' ')}: {t}" for c, t in zip(cats, texts)],
                           "category": cats, "split": split})
    write_version(store, "banking-gen", [generation], kind="import", fmt="prompt-completion", recipe={})
    return test.num_rows


def fill(store: Store, run, make) -> None:
    refs = evaluation.references(store, run.eval_id)
    with open(Path(run.folder) / evaluation.OUTPUTS_FILE, "w", encoding="utf-8") as f:
        for i in range(run.items):
            f.write(json.dumps({"item": i, "output": make(i, refs[i])}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=None, help="test items (default: all 3,080)")
    args = parser.parse_args()
    rng = random.Random(0)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "project") as store:
        out["test_items"] = banking(store, args.items)
        labels = sorted({r[0] for r in store.cursor().execute("SELECT DISTINCT category FROM wb_v1").fetchall()})

        runs = {}
        for name, ref, make in (
                ("gen_a", "banking-gen", lambda i, r: " ".join(w for w in r.split() if rng.random() < 0.8)),
                ("gen_b", "banking-gen", lambda i, r: " ".join(w for w in r.split() if rng.random() < 0.9)),
                ("cls_a", "banking", lambda i, r: r if rng.random() < 0.8 else rng.choice(labels)),
                ("cls_b", "banking", lambda i, r: r.replace("_", " ") if rng.random() < 0.85 else "no idea")):
            run, out[f"{name}_create_s"] = timed(evaluation.create_eval, store, ref, model=eval_setup.ModelSpec("x"))
            fill(store, run, make)
            _, out[f"{name}_ingest_s"] = timed(evaluation.ingest, store, run.eval_id)
            _, out[f"{name}_score_s"] = timed(eval_scores.score, store, run.eval_id)
            runs[name] = run.eval_id
        # The CLI's way (issue 15): answers scored as each batch of the generator lands, the store closed
        # meanwhile; after the last batch of 500 only that batch is computed. Timed: the part done while the
        # generator works (off the command's clock), then the scoring after it.
        run, _ = timed(evaluation.create_eval, store, "banking-gen", model=eval_setup.ModelSpec("x"))
        fill(store, run, lambda i, r: " ".join(w for w in r.split() if rng.random() < 0.8))
        ahead = eval_scores.answers_ahead(store, run)
        lines = (Path(run.folder) / evaluation.OUTPUTS_FILE).read_bytes().splitlines(keepends=True)
        last = max(len(lines) - 500, 0)
        _, out["gen_ahead_while_generating_s"] = timed(ahead.add, *evaluation.output_lines(b"".join(lines[:last]),
                                                                                            run.items))
        evaluation.ingest(store, run.eval_id)
        _, out["gen_score_with_answers_ahead_s"] = timed(eval_scores.score, store, run.eval_id, ahead=ahead.stats)
        out["gen_items_reused"] = ahead.stats.reused
        _, out["reingest_whole_file_s"] = timed(evaluation.ingest, store, runs["gen_a"], from_start=True)
        _, out["gen_slices_by_category_s"] = timed(slices.slices, store, runs["gen_a"], "category")
        _, out["cls_slices_by_category_s"] = timed(slices.slices, store, runs["cls_a"], "category")
        _, out["gen_compare_1000_s"] = timed(compare.compare, store, runs["gen_a"], runs["gen_b"])
        _, out["cls_compare_1000_s"] = timed(compare.compare, store, runs["cls_a"], runs["cls_b"])
        _, out["example_diff_s"] = timed(compare.example_diff, store, runs["gen_a"], runs["gen_b"])
        _, out["leaderboard_s"] = timed(slices.leaderboard, store, runs["gen_a"])
        _, out["neighbours_first_call_s"] = timed(neighbours.neighbours, store, "banking", "my card has not arrived",
                                                  k=10)
        _, out["neighbours_next_call_s"] = timed(neighbours.neighbours, store, "banking", "I lost my card", k=10)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
