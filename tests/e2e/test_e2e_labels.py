"""Journey 2 in a real browser: with accounts on, two annotators sign in (each in their own browser
context) and label the same records (overlap 2); the admin settles the two disagreements on the Label
page and opens the Agreement page, whose Krippendorff's alpha must equal the `krippendorff` library's
on the answers the annotators gave. Finally no password appears in the project folder or the server log.
"""

import re

import krippendorff
import numpy as np
import pytest

from tests.conftest import write_jsonl
from tests.e2e.e2e_helpers import UI, chromium, grep_tree, run_cli, serve
from workbench.core.store import Store
from workbench.data.demo import generate_tickets
from workbench.labels import adjudication, annotations, questions

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHOICES = ["billing", "refund", "shipping"]
PASSWORDS = {"ada": "Ada-admin-pass-7261", "ann": "Ann-labels-pass-3390", "bob": "Bob-labels-pass-8804"}
ROLES = {"ada": "admin", "ann": "annotator", "bob": "annotator"}
N = 6
IDS = [f"T{i:06d}" for i in range(1, N + 1)]
ANSWERS = {  # what each annotator clicks for each record; they disagree on the 2nd and 5th
    "ann": dict(zip(IDS, ["billing", "refund", "shipping", "shipping", "billing", "refund"])),
    "bob": dict(zip(IDS, ["billing", "billing", "shipping", "shipping", "shipping", "refund"])),
}
OVERRIDE = "refund"  # the admin's own final value for the second disputed record


def setup_project(tmp_path):
    project = tmp_path / "project"
    write_jsonl(tmp_path / "tickets.jsonl", list(generate_tickets(N, seed=5)))
    run_cli("import", str(tmp_path / "tickets.jsonl"), "--dataset", "tickets", project=project)
    for name in ("ada", "ann", "bob"):  # the first account must be an admin
        run_cli("users", "add", name, "--role", ROLES[name], "--password-stdin", project=project,
                stdin=PASSWORDS[name] + "\n")
    run_cli("questions", "add", "category", "--dataset", "tickets", "--kind", "single-choice",
            "--choices", ",".join(CHOICES), "--overlap", "2", project=project)
    return project


def label_one(ui: UI, name: str) -> str:
    """Answer the record on screen as planned; returns its key."""
    heading = ui.page.get_by_role("heading", name=re.compile(r"^Record T\d{6}")).first
    heading.wait_for()
    item = re.search(r"T\d{6}", heading.inner_text()).group(0)
    value = ANSWERS[name][item]
    ui.click(re.compile(rf"^{value}( Shortcut \w+)?$"))  # the button also shows its keyboard shortcut
    ui.wait_text(f"Saved {value} for record {item}.")
    ui.settle()  # the message is drawn before the next record's heading: let the run finish
    return item


def metric(ui: UI, title: str) -> str:
    box = ui.page.locator('[data-testid="stMetric"]').filter(has_text=title).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_two_annotators_label_the_admin_adjudicates_and_agreement_shows(tmp_path):
    project = setup_project(tmp_path)
    with serve(project, tmp_path / "server.log") as server, chromium() as browser:
        ann = UI(browser, server.url, "journey2_labels", width=1280).open()
        bob = UI(browser, server.url, "journey2_labels", width=1280).open()
        bob.shots = 50  # one folder, two people: keep their screenshots apart
        for ui, name in ((ann, "ann"), (bob, "bob")):
            ui.login(name, PASSWORDS[name])
            ui.page.get_by_role("heading", name="Label").first.wait_for()
            # One page only, so Streamlit shows no navigation at all: nothing else to click.
            side = ui.page.locator('[data-testid="stSidebar"]').inner_text()
            assert not {"Datasets", "Inspect", "Agreement", "Balance", "Train", "Evaluate"} & set(side.split()), side
            ui.wait_text(f"You: 0 done, {N} remaining")
        ann.shot("annotator-first-record")
        # They work at the same time: turns interleave, each sees every record once.
        seen = {"ann": [], "bob": []}
        for _ in range(N):
            for ui, name in ((ann, "ann"), (bob, "bob")):
                seen[name].append(label_one(ui, name))
        assert seen == {"ann": IDS, "bob": IDS}
        for ui in (ann, bob):
            ui.wait_text("Nothing left for you in this question")
        ann.shot("annotator-done")

        # An annotator who types another page's address still only gets their own pages; the new
        # page load keeps her signed in (the session token is also in a cookie).
        href = ann.page.get_by_role("link", name="Agreement").count()
        assert href == 0
        ann.open("page_agreement")
        ann.wait_text("Signed in as ann")
        ann.page.get_by_role("heading", name="Label").first.wait_for()
        assert ann.page.get_by_text("Krippendorff").count() == 0
        assert ann.page.get_by_role("heading", name="Agreement").count() == 0
        # Signing out ends it for good: a reload asks for the password again.
        ann.close_dialog()  # Streamlit's "page not found" for the page she may not open
        ann.click("Sign out")
        ann.page.get_by_role("heading", name="Sign in").first.wait_for()
        ann.open()
        ann.page.get_by_role("heading", name="Sign in").first.wait_for()
        assert ann.page.get_by_text("Signed in as").count() == 0
        ann.close()
        bob.close()

        admin = UI(browser, server.url, "journey2_labels").open()
        admin.shots = 20
        admin.login("ada", PASSWORDS["ada"])
        admin.nav("Label")
        admin.page.get_by_role("radio", name="Adjudicate").click()  # a segmented control
        admin.settle()
        admin.wait_text("Disputed records: 2")
        admin.shot("adjudicate")
        first, second = [i for i in IDS if ANSWERS["ann"][i] != ANSWERS["bob"][i]]
        assert admin.page.get_by_role("combobox", name="Record").first.input_value() == first
        admin.click("Use this")  # the first card is ann's answer (cards are in annotator order)
        admin.wait_text(f"Final value of record {first} saved.")
        admin.wait_text("Disputed records: 1")
        form = admin.page.locator('[data-testid="stForm"]').first
        admin.select("Or choose another value", OVERRIDE, within=form)
        admin.click("Set final value")
        admin.wait_text("No disputed records.")

        admin.nav("Agreement")
        admin.wait_text("Coefficients")
        ann_values = [CHOICES.index(ANSWERS["ann"][i]) for i in IDS]
        bob_values = [CHOICES.index(ANSWERS["bob"][i]) for i in IDS]
        alpha = krippendorff.alpha(reliability_data=np.array([ann_values, bob_values], float),
                                   level_of_measurement="nominal")
        assert metric(admin, "Krippendorff's alpha") == f"{alpha:.3f}"
        agreed = sum(a == b for a, b in zip(ann_values, bob_values)) / N
        assert metric(admin, "Percent agreement") == f"{agreed:.3f}"
        admin.shot("agreement")
        admin.close()
        log = server.log
    with Store.open(project) as store:
        final = adjudication.gold(store, "tickets", "category")
        history = annotations.history(store, questions.get_question(store, "tickets", "category"))
    expected = {i: ANSWERS["ann"][i] for i in IDS if ANSWERS["ann"][i] == ANSWERS["bob"][i]}
    expected.update({first: ANSWERS["ann"][first], second: OVERRIDE})
    assert final == expected
    assert len(history) == 2 * N + 2  # every click is there, once
    for name, password in PASSWORDS.items():  # not in the store, the WAL, uploads or the server log
        assert grep_tree(project, password.encode()) == [], name
        assert password not in log.read_text(errors="replace"), name
