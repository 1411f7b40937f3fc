"""Quality flags: hand-labelled records for each flag, the vectorised junk rule against its
character-by-character definition, the language heuristic, browse filters on flags, and
`workbench stats` counting them."""

import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.cli.main import main
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.data import browse
from workbench.data.demo import generate_tickets
from workbench.inspect import quality

TICKETS = list(generate_tickets(80, seed=6))
LONG = TICKETS[0]["completion"] * 12
# (prompt, completion, the flags a person expects)
SPECIAL = [
    ("   \t ", "A perfectly normal answer about your parcel.", {"empty"}),
    ("Where is my parcel? It is late again.", "", {"empty"}),
    ("Can you refund my order please?", "OK.", {"short_response"}),
    ("Tell me everything about the warranty terms.", LONG, {"long_response"}),
    ("Please cancel my order right now.", "  please CANCEL my order right now.  ", {"repeats_prompt"}),
    ("What is the status of my refund?", "You asked: What is the status of my refund? It was sent today.",
     {"repeats_prompt"}),
    ("#### $$$ 1234 5678 !!!! ??? %%% ***", "We could not read your message, could you send it again?", {"junk"}),
    ("My order arrived broken, what now?",
     "<div class='x'><span></span><br/><p></p><table><tr><td></td></tr></table></div> ok", {"junk"}),
    ("😀😀😀😀😀😀😀😀😀😀 ✓✓✓✓", "Thanks for the smiles, how can we help you today?", {"junk"}),
    ("Ich habe meine Bestellung nicht erhalten und bitte um eine schnelle Antwort.",
     "Wir haben die Bestellung geprüft und sie ist unterwegs zu Ihnen.", {"language"}),
    ("Я не получил свой заказ, пожалуйста, помогите мне с этим вопросом.",
     "Мы проверили ваш заказ, он уже в пути к вам.", {"language"}),
    ("Hola", "Gracias", {"short_response"}),  # too short to judge the language
]


def make_version(store, name="tickets", extra=SPECIAL, completion=True):
    prompts = [t["prompt"] for t in TICKETS] + [p for p, _, _ in extra]
    completions = [t["completion"] for t in TICKETS] + [c for _, c, _ in extra]
    cols = {"prompt": prompts, "completion": completions if completion else pa.nulls(len(prompts), pa.string()),
            "system": pa.nulls(len(prompts), pa.string()), "messages": pa.nulls(len(prompts), pa.string()),
            "category": [t["category"] for t in TICKETS] + ["special"] * len(extra)}
    return write_version(store, name, [pa.table(cols)], kind="import",
                         fmt="prompt-completion" if completion else "classification", recipe={})


def flags_by_row(store, version) -> dict[int, set]:
    path = quality.compute_flags(store, version)
    names = list(quality.FLAGS)
    rows = store.cursor().execute(f"SELECT _row, {', '.join(names)} FROM read_parquet('{path}')").fetchall()
    return {r[0]: {n for n, v in zip(names, r[1:]) if v} for r in rows}


def test_hand_labelled_records_get_exactly_their_flags(store):
    version = make_version(store)
    got = flags_by_row(store, version)
    n = len(TICKETS)
    assert {row: f for row, f in got.items() if row < n and f} == {}  # ordinary tickets carry no flag
    for i, (_, _, expected) in enumerate(SPECIAL):
        assert got[n + i] == expected, SPECIAL[i][:2]
    report = quality.quality_report(store, version)
    assert report["language"] == "en"
    assert report["flags"] == {name: sum(name in f for _, _, f in SPECIAL) for name in quality.FLAGS}
    assert report["flagged"] == len(SPECIAL)
    assert "characters here" in report["rules"]["long_response"]


def test_classification_data_has_no_response_flags(store):
    extra = [("#### $$$ 1234 5678 !!!! ???", None, {"junk"}), ("   ", None, {"empty"})]
    version = make_version(store, "labels", extra=extra, completion=False)
    got = flags_by_row(store, version)
    n = len(TICKETS)
    assert [got[n], got[n + 1]] == [{"junk"}, {"empty"}]
    assert not any(got[r] for r in range(n))


text_st = st.text(alphabet=st.sampled_from(list("ab cdéß<>/=\"'#$1234!?😀✓—©\n\tЖ中")), max_size=60)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), text_st), max_size=12))
def test_vectorised_junk_rule_equals_the_per_character_rule(texts):
    arr = pa.array(texts, pa.string())
    assert quality._junk_mask(arr).tolist() == [quality.is_junk(t) for t in texts]
    sliced = arr.slice(1)  # Arrow slices carry an offset into shared buffers
    assert quality._junk_mask(sliced).tolist() == [quality.is_junk(t) for t in texts[1:]]


def test_character_classes_by_hand():
    assert quality.char_classes("Hello, world 42!") == (10, 4)
    assert quality.char_classes("Zoë Жук 中文") == (8, 0)
    assert quality.char_classes("😀 ✓ — ©") == (0, 4)


def test_language_of_other_datasets(store):
    german = [("Ich habe meine Bestellung nicht erhalten und bitte um Hilfe mit der Lieferung.",
               "Wir haben die Bestellung geprüft und sie ist unterwegs zu Ihnen.", set())] * 30
    version = write_version(store, "de", [pa.table({
        "prompt": [p for p, _, _ in german] + ["Where is my parcel? It has been a week and nothing came."],
        "completion": [c for _, c, _ in german] + ["It is on the way and will arrive tomorrow."]})],
        kind="import", fmt="prompt-completion", recipe={})
    lang, shares = quality.dataset_language(store, version)
    assert lang == "de" and shares["de"] == pytest.approx(30 / 31, abs=1e-4) and shares["en"] > 0
    got = flags_by_row(store, version)
    assert [r for r, f in got.items() if "language" in f] == [30]


def test_browse_filters_on_flags(store):
    version = make_version(store)
    got = flags_by_row(store, version)
    junk = sorted(r for r, f in got.items() if "junk" in f)
    assert browse.count(store, version, flag="junk") == len(junk) == 3
    page = browse.page(store, version, flag="junk", limit=2)
    assert page.column("row").to_pylist() == [r + 1 for r in junk[:2]]
    page = browse.page(store, version, flag="junk", offset=2, limit=10)
    assert page.column("row").to_pylist() == [junk[2] + 1]
    assert browse.count(store, version, flag="junk", category="special", text="smiles") == 1
    assert browse.count(store, version, flag="pii") > 0  # runs the PII scan when it is asked for
    assert quality.browse_flags(store, version)[-1] == "pii"
    with pytest.raises(WorkbenchError, match="unknown flag"):
        browse.count(store, version, flag="nonsense")


def test_stats_counts_flags_and_keeps_its_keys(tmp_path, capsys):
    project = str(tmp_path / "p")
    with Store.open(project) as store:
        make_version(store)
    assert main(["stats", "tickets", "--project", project, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == len(TICKETS) + len(SPECIAL)
    assert out["by_category"]["special"] == len(SPECIAL)
    assert out["flags"] == {name: sum(name in f for _, _, f in SPECIAL) for name in quality.FLAGS}
    assert out["language"] == "en" and out["tokens"]["approximate"] is True
