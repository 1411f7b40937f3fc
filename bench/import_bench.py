"""Import 1,000,000 support tickets (~850 MB JSONL): Workbench vs Hugging Face `datasets`, side by side.

    python bench/import_bench.py [--records 1000000] [--rounds 2]

Each contender runs in its own fresh process (peak RSS is that process's ru_maxrss),
alternating, and the median wall time is reported. The file is made once by the
project's own generator under bench/data/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

CHILD = {
    "datasets.load_dataset('json')": """
import datasets, resource, sys, time
datasets.disable_progress_bars()
t = time.perf_counter()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
print(len(ds), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""",
    "workbench import (validate + version + hash)": """
import resource, sys, time
from workbench.core.store import Store
from workbench.data.importer import import_file
t = time.perf_counter()
store = Store.open(sys.argv[2])
r = import_file(store, sys.argv[1], "tickets")
store.close()
print(r.imported, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""",
}


def ensure_file(records: int) -> Path:
    path = DATA / f"tickets_{records}.jsonl"
    if not path.exists():
        from workbench.data.demo import write_jsonl

        DATA.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        write_jsonl(path.with_suffix(".tmp"), records, seed=7)
        path.with_suffix(".tmp").rename(path)
        print(f"generated {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def run_child(code: str, path: Path) -> tuple[int, float, int]:
    work = tempfile.mkdtemp(prefix="wb-bench-", dir=DATA)
    try:
        out = subprocess.run([sys.executable, "-c", code, str(path), work], capture_output=True, text=True,
                             check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        n, seconds, rss = out.stdout.split()[:3]
        return int(n), float(seconds), int(rss)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    path = ensure_file(args.records)
    results: dict[str, list] = {name: [] for name in CHILD}
    for _ in range(args.rounds):
        for name, code in CHILD.items():
            results[name].append(run_child(code, path))
    print(f"file: {path.name}, {path.stat().st_size / 1e6:.0f} MB, {args.records:,} records; "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    summary = {}
    for name, runs in results.items():
        secs = [r[1] for r in runs]
        rss = max(r[2] for r in runs)
        summary[name] = (statistics.median(secs), rss)
        print(f"{name:<48} median {statistics.median(secs):6.2f} s  (runs: {', '.join(f'{s:.2f}' for s in secs)})"
              f"  peak RSS {rss / 1e6:6.0f} MB  records {runs[0][0]:,}")
    hf, wb = (summary[n][0] for n in CHILD)
    print(f"ratio workbench / datasets: {wb / hf:.2f} (target <= 1.0); "
          f"workbench peak RSS {summary[list(CHILD)[1]][1] / 1e6:.0f} MB (target <= 1000 MB)")
    print(json.dumps({"ratio": round(wb / hf, 3), "workbench_s": round(wb, 2), "datasets_s": round(hf, 2),
                      "workbench_peak_mb": round(summary[list(CHILD)[1]][1] / 1e6)}))


if __name__ == "__main__":
    main()
