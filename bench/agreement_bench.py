"""Krippendorff's alpha and its bootstrap interval on a large reliability table, beside the `krippendorff` package.

    python bench/agreement_bench.py [--items 100000] [--annotators 5] [--labels 5] [--missing 0.2]
                                    [--resamples 1000] [--repeat 5] [--full-report]

Data: every item has a true label; each annotator gives it with probability 0.7, else a random label;
20% of the answers are then removed. Times (median of --repeat runs):
- alpha (nominal, and ordinal) with metrics.agreement vs krippendorff.alpha (same value to 1e-9);
- the 95% bootstrap interval with --resamples resamples of items (the package has none);
- with --full-report, workbench.labels.agreement.build_report (all coefficients, intervals, Dawid-Skene).
Targets: alpha within 2x the package's time; the 1,000-resample interval in 10 s or less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import krippendorff  # noqa: E402

from metrics import agreement as ag  # noqa: E402


def make_data(items: int, annotators: int, labels: int, missing: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, labels, items)
    codes = np.where(rng.random((items, annotators)) < 0.7, truth[:, None], rng.integers(0, labels, (items, annotators)))
    codes[rng.random((items, annotators)) < missing] = -1
    return codes.astype(np.int32)


def timed(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--annotators", type=int, default=5)
    p.add_argument("--labels", type=int, default=5)
    p.add_argument("--missing", type=float, default=0.2)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--full-report", action="store_true", help="also time the whole report (all coefficients)")
    args = p.parse_args()

    codes = make_data(args.items, args.annotators, args.labels, args.missing)
    ratings = ag.Ratings(codes, tuple(range(args.labels)), tuple(range(args.items)), tuple(range(args.annotators)))
    reliability = np.where(codes >= 0, codes, np.nan).T.astype(np.float64)  # the package: annotators x items
    print(f"{args.items:,} items x {args.annotators} annotators, {args.labels} labels, {args.missing:.0%} missing "
          f"({int((codes >= 0).sum()):,} answers); median of {args.repeat} runs")
    print(f"{'what':<44} {'workbench':>10} {'krippendorff':>13} {'ratio':>7}  value (ours / package)")
    for level in ("nominal", "ordinal"):
        t_ref, ref = timed(lambda: krippendorff.alpha(reliability_data=reliability, level_of_measurement=level),
                           args.repeat)
        t_ours, ours = timed(lambda: ag.krippendorff_alpha(ratings, level=level), args.repeat)
        assert abs(ours.value - ref) < 1e-9, (ours.value, ref)
        print(f"{'alpha ' + level:<44} {t_ours:>9.3f}s {t_ref:>12.3f}s {t_ours / t_ref:>6.2f}x  "
              f"{ours.value:.9f} / {ref:.9f}")
    for level in ("nominal", "ordinal"):
        t_boot, c = timed(lambda: ag.krippendorff_alpha(ratings, level=level, resamples=args.resamples),
                          max(1, args.repeat // 2))
        print(f"{f'alpha {level} + {args.resamples:,}-resample 95% interval':<44} {t_boot:>9.3f}s {'(none)':>13} "
              f"{'':>7}  [{c.ci_low:.4f}, {c.ci_high:.4f}]")
    t_ds, ds = timed(lambda: ag.dawid_skene(ratings), 1)
    print(f"{'Dawid-Skene (EM)':<44} {t_ds:>9.3f}s {'':>13} {'':>7}  {ds.iterations} iterations")
    if args.full_report:
        import pandas as pd

        from workbench.labels.agreement import build_report

        r, a = np.nonzero(codes >= 0)
        answers = pd.DataFrame({"item": r.astype(str), "annotator": a.astype(str), "value": codes[r, a].astype(str)})
        t_rep, _ = timed(lambda: build_report(answers, level="nominal", resamples=args.resamples), 1)
        print(f"{'whole report (all coefficients + intervals)':<44} {t_rep:>9.3f}s")


if __name__ == "__main__":
    main()
