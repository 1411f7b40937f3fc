"""Journey 3 in a real browser: balance the demo tickets to a uniform category mix of 200 records,
commit it, then split it train/val/test stratified by category. Checked against plain Python over the
stored records: 20 per category, the records are the original tickets, and no ticket text (upsampled
copies included) lands in two splits."""

import re
from collections import Counter, defaultdict

import pytest

from tests.e2e.e2e_helpers import UI, chromium, serve
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo import generate_tickets
from workbench.data.demo_project import DEMO_DATASET, make_demo_project

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RECORDS, SIZE = 300, 200


def test_balance_to_a_target_then_split(tmp_path):
    project = make_demo_project(tmp_path / "project", records=RECORDS)["project"]
    categories = Counter(t["category"] for t in generate_tickets(RECORDS, seed=7))
    per_category = SIZE // len(categories)
    assert per_category * len(categories) == SIZE and max(per_category / n for n in categories.values()) <= 10
    out = f"{DEMO_DATASET}-balanced"
    with serve(project, tmp_path / "server.log") as server, chromium() as browser:
        ui = UI(browser, server.url, "journey3_balance").open()
        ui.wait_text("Showing rows 1–50")
        ui.nav("Balance")
        ui.wait_text("Target mix")
        assert ui.page.get_by_role("combobox", name="Balance by").input_value() == "category"
        ui.fill("Total records", str(SIZE))
        ui.radio("Strategy", "hybrid")
        ui.wait_text(f"The result hits the target exactly: {SIZE} records.")
        ui.shot("balance-preview")
        ui.click("Commit balanced version")
        ui.wait_text(re.compile(rf"Wrote {re.escape(out)}@1: {SIZE} records"))
        assert ui.page.get_by_role("combobox", name="Dataset").input_value() == out  # the new version is shown

        ui.tab("Split")
        ui.select("Stratify by", "category")
        ui.click("Make splits")
        done = ui.wait_text(re.compile(rf"Wrote {re.escape(out)}@2 with a split column"))
        counts = {k: int(v.replace(",", "")) for k, v in
                  re.findall(r"(train|val|test) ([\d,]+)", done.inner_text())}
        ui.wait_text("Leakage report: 0 exact duplicate groups cross splits")
        ui.shot("split-done")
        ui.check()
        ui.close()
    with Store.open(project) as store:
        balanced, split = get_version(store, f"{out}@1"), get_version(store, f"{out}@2")
        rows = store.cursor().execute(f"SELECT id, prompt, category FROM {balanced.table_name}").fetchall()
        split_rows = store.cursor().execute(f"SELECT prompt, split FROM {split.table_name}").fetchall()
    originals = {t["id"]: t for t in generate_tickets(RECORDS, seed=7)}
    assert Counter(c for _, _, c in rows) == {c: per_category for c in categories}
    assert all(originals[i]["prompt"] == p and originals[i]["category"] == c for i, p, c in rows)
    assert Counter(s for _, s in split_rows) == counts and sum(counts.values()) == SIZE
    where = defaultdict(set)
    for prompt, s in split_rows:
        where[prompt].add(s)
    assert all(len(s) == 1 for s in where.values())  # no text in two splits
    assert counts["train"] / SIZE == pytest.approx(0.8, abs=0.1)
