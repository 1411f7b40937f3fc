"""ROUGE-1/2/L/Lsum with stemming: metrics.rouge vs Google's rouge-score, side by side on the same pairs.

    python bench/rouge_bench.py [--pairs 4514] [--rounds 1]

Workload: there is no file of real support responses here, so the pairs are built from the project's
own synthetic tickets (`workbench.data.demo.generate_tickets`, seed 7): each reference joins the answers of
two or three tickets (about 150 words, paragraphs separated by newlines, so ROUGE-Lsum has several sentences);
each prediction is a deterministic perturbation of its reference (words dropped, replaced and
inserted, a paragraph swapped for one from another ticket, sometimes paragraphs reordered).
Both scorers get exactly these pairs in this one run; every number is checked to be identical.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def make_pairs(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """n (prediction, reference) pairs of ~150-word support answers; deterministic for a seed."""
    from workbench.data.demo import generate_tickets

    answers = [t["completion"] for t in generate_tickets(2 * n + 50, seed=seed)]
    rng = random.Random(seed)
    vocab = sorted({w for a in answers[:500] for w in a.split()})
    predictions, references = [], []
    for i in range(n):
        first = answers[2 * i].split("\n\n")
        second = answers[2 * i + 1].split("\n\n")
        # greeting + bodies of both answers (+ more bodies up to ~150 words) + sign-off of the first
        paragraphs = first[:-1] + second[1:-1]
        target = rng.randint(100, 150)
        while sum(len(p.split()) for p in paragraphs) < target:
            paragraphs.append(rng.choice(answers).split("\n\n")[1])
        paragraphs += first[-1:]
        reference = "\n".join(paragraphs)
        pred_pars = []
        for p in paragraphs:
            words = p.split()
            out = []
            for w in words:
                r = rng.random()
                if r < 0.06:
                    continue  # dropped
                if r < 0.12:
                    out.append(rng.choice(vocab))  # replaced
                else:
                    out.append(w)
                if rng.random() < 0.04:
                    out.append(rng.choice(vocab))  # inserted
            pred_pars.append(" ".join(out))
        if rng.random() < 0.5:  # one paragraph from another ticket's answer
            other = answers[rng.randrange(len(answers))].split("\n\n")
            pred_pars[rng.randrange(len(pred_pars))] = rng.choice(other)
        if rng.random() < 0.3 and len(pred_pars) > 3:  # two middle paragraphs swapped
            a, b = rng.sample(range(1, len(pred_pars) - 1), 2)
            pred_pars[a], pred_pars[b] = pred_pars[b], pred_pars[a]
        predictions.append("\n".join(pred_pars))
        references.append(reference)
    return predictions, references


def run_reference(predictions, references):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    t, cpu = time.perf_counter(), time.process_time()
    out = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return time.perf_counter() - t, time.process_time() - cpu, out


def run_ours(predictions, references):
    from metrics import rouge

    rouge._TOKENIZERS.clear()  # a cold stem cache, as a fresh process would have
    t, cpu = time.perf_counter(), time.process_time()
    out = [rouge.rouge_pair(pred, ref, rouge_types=TYPES) for pred, ref in zip(predictions, references)]
    return time.perf_counter() - t, time.process_time() - cpu, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4514)
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds of each (median reported)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    predictions, references = make_pairs(args.pairs, args.seed)
    words = [len(r.split()) for r in references]
    lines = [r.count("\n") + 1 for r in references]
    print(f"workload: {args.pairs:,} pairs built from workbench.data.demo.generate_tickets answers (seed {args.seed}); "
          f"references {statistics.mean(words):.0f} words (min {min(words)}, max {max(words)}), "
          f"{statistics.mean(lines):.1f} newline-separated sentences; predictions are perturbed references")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs visible, rouge types {TYPES}, "
          f"use_stemmer=True")

    ref_times, our_times, ref_cpu, our_cpu = [], [], [], []
    for _ in range(args.rounds):
        t_ref, c_ref, ref_out = run_reference(predictions, references)
        t_ours, c_ours, our_out = run_ours(predictions, references)
        ref_times.append(t_ref)
        our_times.append(t_ours)
        ref_cpu.append(c_ref)
        our_cpu.append(c_ours)
    mismatches = sum(tuple(a[t]) != tuple(b[t]) for a, b in zip(ref_out, our_out) for t in TYPES)
    worst = max(abs(x - y) for a, b in zip(ref_out, our_out) for t in TYPES for x, y in zip(a[t], b[t]))
    t_ref, t_ours = statistics.median(ref_times), statistics.median(our_times)
    print(f"rouge-score RougeScorer.score : {t_ref:8.2f} s  ({args.pairs / t_ref:8.0f} pairs/s)  runs "
          + ", ".join(f"{x:.2f}" for x in ref_times))
    print(f"metrics.rouge.rouge_pair      : {t_ours:8.2f} s  ({args.pairs / t_ours:8.0f} pairs/s)  runs "
          + ", ".join(f"{x:.2f}" for x in our_times))
    c_ref, c_ours = statistics.median(ref_cpu), statistics.median(our_cpu)
    print(f"CPU time (less sensitive to a busy machine): rouge-score {c_ref:.2f} s, ours {c_ours:.2f} s, "
          f"ratio {c_ref / c_ours:.1f}x")
    print(f"speed-up {t_ref / t_ours:.1f}x wall (target >= 20x); identical numbers: "
          f"{'yes' if mismatches == 0 else f'NO, {mismatches} differ'} (largest difference {worst:.3g})")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
