"""Journey 1 in a real browser: import a CSV that has a bad row, see the error, import again with
skip, then browse and filter the records, and find the bad row in the quarantine.

Expected figures come from reading the CSV with Python's csv module, not from the app."""

import csv
import re

import pytest

from tests.e2e.e2e_helpers import UI, chromium, serve
from workbench.core.project import init_project
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo import generate_tickets

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BAD = 6  # index of the record whose prompt is blank
WORD = "refund"


def write_csv(path, n=120):
    rows = list(generate_tickets(n, seed=11))
    rows[BAD]["prompt"] = "   "
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "prompt", "completion", "category", "priority"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    # The physical line the bad record starts on (cells span lines): one past where the record before it ends.
    reader = csv.reader(open(path, newline="", encoding="utf-8"))
    ends = [reader.line_num for _ in reader]  # ends[0] is the header
    return rows, ends[BAD] + 1


def test_import_with_a_bad_row_then_skip_browse_and_filter(tmp_path):
    project = init_project(tmp_path / "project").root
    rows, bad_line = write_csv(tmp_path / "tickets.csv")
    good = [r for i, r in enumerate(rows) if i != BAD]
    with serve(project, tmp_path / "server.log") as server, chromium() as browser:
        ui = UI(browser, server.url, "journey1_import").open()
        ui.wait_text("No datasets yet")
        ui.upload(tmp_path / "tickets.csv")
        ui.fill("Dataset name", "tickets")
        ui.click("Import")
        ui.wait_text("nothing was imported")
        assert "1 bad row" in ui.body()
        errors = ui.page.locator('[data-testid="stDataFrame"]').first
        errors.wait_for()
        ui.shot("import-rejected")
        assert ui.cells(errors) == [str(bad_line), "prompt", "prompt is empty"]  # line, field, reason (no markdown)

        ui.radio("On bad rows", "skip")
        ui.click("Import")
        ui.wait_text(f"Imported {len(good)} records into tickets@1")
        ui.wait_text("Skipped 1 bad row;")
        ui.wait_text(f"Showing rows 1–50 of {len(good)}")
        ui.shot("import-skipped")

        # Filter by a word and by a category: counts as Python counts them.
        ui.fill("Search text", WORD)
        by_word = [r for r in good if WORD in r["prompt"].lower() or WORD in r["completion"].lower()]
        ui.wait_text(re.compile(rf"Showing rows 1–{min(50, len(by_word))} of {len(by_word)} matching the filters"))
        ui.multiselect("Categories", "shipping")
        both = [r for r in by_word if r["category"] == "shipping"]
        ui.wait_text(re.compile(rf"of {len(both)} matching the filters"))
        ui.expand("Quarantine: 1 rejected row ")
        quarantine = ui.page.locator('[data-testid="stExpander"]').filter(has_text="Quarantine: 1 rejected row ")
        assert ui.cells(quarantine.locator('[data-testid="stDataFrame"]'))[:3] == [
            str(bad_line), "prompt", "`prompt` is empty"]
        ui.shot("browse-filtered")
        ui.check()
        ui.close()
    with Store.open(project) as store:  # what the page said is what the store holds
        version = get_version(store, "tickets")
        assert version.row_count == len(good)
        ids = [r[0] for r in store.cursor().execute(f"SELECT id FROM {version.table_name} ORDER BY _row").fetchall()]
        assert ids == [r["id"] for r in good]
