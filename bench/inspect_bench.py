"""Inspect on 1,000,000 records: stats with approximate tokens and quality flags, the PII scan, a real
tokenizer's rate, and browse filters on flags.

    python bench/inspect_bench.py [--records 1000000] [--project DIR] [--tokenizer-records 50000]

Uses (and makes once, as bench/browse_bench.py does) the project bench/data/project_<records> with the
generated tickets imported (workbench.data.demo.write_jsonl puts emails, phones and cards in ~10% of them).
Every cached Inspect result of the version is deleted first, so the first figures are cold; the
second `stats` run shows the cached path. Targets: PII scan <= 60 s, stats with approximate tokens
<= 5 s (2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.import_bench import DATA, ensure_file  # noqa: E402

CPU = {}


def timed(fn):
    """(result, wall seconds); the process's CPU seconds (all threads) go to CPU[fn name]: on a busy machine
    wall time grows with the load, CPU time much less."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    CPU["last"] = time.process_time() - c
    return out, time.perf_counter() - t


def cpu() -> str:
    return f"cpu {CPU['last']:.2f} s"


def tokenizer_for(store, version, records: int):
    """The project's tiny base tokenizer when built, else a byte-level BPE trained on 2,000 of its records
    (ChatML template), saved and loaded like a model folder."""
    from workbench.inspect import tokens

    if (store.project.models_dir / "tiny" / "tokenizer.json").exists():
        return tokens.load_tokenizer(store, "tiny")
    folder = DATA / "inspect_bench_tokenizer"
    if not (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        rows = store.cursor().execute(f"SELECT prompt, completion FROM {version.table_name} LIMIT 2000").fetchall()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([t for r in rows for t in r if t], trainers.BpeTrainer(
            vocab_size=8000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                              "{{ message['content'] }}<|im_end|>\n{% endfor %}"
                              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        fast.save_pretrained(folder)
    return tokens.load_tokenizer(store, str(folder))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--project", help="project folder (default bench/data/project_<records>)")
    ap.add_argument("--tokenizer-records", type=int, default=50_000,
                    help="records tokenised with a real tokenizer to measure its rate")
    args = ap.parse_args()
    from workbench.cli.inspect import inspect_stats
    from workbench.core.store import Store
    from workbench.core.versions import get_version
    from workbench.data import browse
    from workbench.data.importer import import_file
    from workbench.inspect import pii, quality, tokens

    project = Path(args.project) if args.project else DATA / f"project_{args.records}"
    store = Store.open(project)
    try:
        version = get_version(store, "tickets")
    except Exception:
        version = import_file(store, ensure_file(args.records), "tickets").version
    stem = f"_v{version.version_id}_{version.content_hash[:16]}"
    for kind in ("tokens", "quality", "pii"):
        for f in store.project.cache_dir.glob(f"{kind}{stem}*"):
            f.unlink()
    threads = store.cursor().execute("SELECT current_setting('threads')").fetchall()[0][0]
    print(f"{version.row_count:,} records; {os.cpu_count()} cores (DuckDB threads: {threads})")

    def stats():
        out = browse.stats(store, version)
        out.update(inspect_stats(store, version, tokenizer=None, max_length=1024, progress=None))
        return out

    tok_path, t_tok = timed(lambda: tokens.count_tokens(store, version))
    c_tok = cpu()
    flags_path, t_flags = timed(lambda: quality.compute_flags(store, version))
    c_flags = cpu()
    for f in (tok_path, flags_path):
        f.unlink()
    out, cold = timed(stats)
    c_cold = cpu()
    _, warm = timed(stats)
    print(f"stats with approximate tokens + quality flags: cold {cold:.2f} s ({c_cold}), cached {warm:.2f} s "
          f"({cpu()}) (target <= 5 s)\n  approximate token counts alone {t_tok:.2f} s ({c_tok}), quality flags alone "
          f"{t_flags:.2f} s ({c_flags})")
    print(f"  tokens total p50/p95/max {out['tokens']['total']['p50']}/{out['tokens']['total']['p95']}/"
          f"{out['tokens']['total']['max']}; flags {out['flags']}; language {out['language']}")

    _, t_pii = timed(lambda: pii.scan(store, version))
    report = pii.pii_report(store, version)
    print(f"PII scan: {t_pii:.1f} s ({cpu()}) (target <= 60 s); {report['records_with_pii']:,} records with PII; "
          f"counts {report['counts']}")

    for flag in ("language", "pii"):
        (n, t_count) = timed(lambda: browse.count(store, version, flag=flag))
        _, t_page = timed(lambda: browse.page(store, version, flag=flag, limit=50))
        print(f"browse with flag={flag}: count {n:,} in {t_count * 1000:.0f} ms, page of 50 in {t_page * 1000:.0f} ms")

    counter = tokenizer_for(store, version, args.tokenizer_records)
    n = min(args.tokenizer_records, version.row_count)
    cur = store.con.cursor()
    reader = cur.sql(f"SELECT prompt, completion, system, messages FROM {version.table_name} LIMIT {n}"
                     ).to_arrow_reader(tokens.BATCH_ROWS)
    batches = [b.to_pylist() for b in reader]
    counted, secs = timed(lambda: [c for b in batches for c in tokens.count_records(counter, b)])
    total = sum(c[0] for c in counted)
    print(f"real tokenizer ({counter.name}, vocab {len(counter.tokenizer):,}, chat template, fast batch encode): "
          f"{n:,} records, {total:,} tokens in {secs:.1f} s = {n / secs:,.0f} records/s, {total / secs:,.0f} "
          f"tokens/s ({cpu()}); 1M records would take ~{1e6 / (n / secs) / 60:.1f} min")
    import resource

    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    store.close()


if __name__ == "__main__":
    main()
