"""Label load, short: 20 annotator sessions answer flat out for 10 s against one store (threads, as
Streamlit runs sessions); every acknowledged answer is stored exactly once, nothing else is, and no
record gets more annotators than its overlap. The full 60-s run with figures: bench/label_load_bench.py."""

import pytest

from bench.label_load_bench import make_project, report, run_load

pytestmark = pytest.mark.slow


def test_twenty_annotators_lose_and_duplicate_nothing(tmp_path, capsys):
    make_project(tmp_path, records=2000, overlap=2)
    out = run_load(tmp_path / "project", sessions=20, seconds=10, think=0.0)
    with capsys.disabled():
        print("\n" + report(out, 2000, 2))  # the p95 latency, in the test log
    assert out["session_errors"] == []
    assert out["answers"] > 20  # every session got work done
    assert out["per_session_answers"]["min"] >= 1
    assert out["lost"] == 0 and out["duplicated"] == 0 and out["unacknowledged_stored"] == 0
    assert out["records_over_overlap"] == 0 and out["answered_twice_by_one_annotator"] == 0
    assert out["latency_ms"]["p95"] is not None
