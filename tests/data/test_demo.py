"""Tests for workbench.data.demo: determinism, category mix, lengths, duplicates, fake PII, malformed files, annotations."""

import csv
import difflib
import itertools
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from workbench.data import demo

N = 20_000
KEYS = ["id", "prompt", "completion", "category", "priority", "channel"]


@pytest.fixture(scope="module")
def tickets():
    return list(demo.generate_tickets(N))


def luhn_ok(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if k % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_luhn_helper_itself():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert demo.write_jsonl(a, 3000, seed=7) == demo.write_jsonl(b, 3000, seed=7)
    demo.write_jsonl(c, 3000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    first = [json.loads(p.read_text("utf-8").splitlines()[0]) for p in (a, c)]
    assert first[0]["prompt"] != first[1]["prompt"]


def test_generator_is_repeatable_and_start_offsets_ids():
    assert list(demo.generate_tickets(50, seed=3)) == list(demo.generate_tickets(50, seed=3))
    ids = [t["id"] for t in demo.generate_tickets(3, start=10)]
    assert ids == ["T000011", "T000012", "T000013"]
    assert [t["id"] for t in demo.generate_tickets(2)] == ["T000001", "T000002"]
    assert list(demo.generate_tickets(0)) == []
    assert list(demo.generate_tickets(100)) == list(demo.generate_tickets(3000))[:100]  # prefix-stable
    later = list(demo.generate_tickets(3, start=3))
    assert [t["prompt"] for t in later] != [t["prompt"] for t in demo.generate_tickets(6)][3:]  # own stream


def test_record_shape_and_unique_ids(tickets):
    assert len(tickets) == N
    for t in tickets:
        assert list(t) == KEYS
        assert all(isinstance(t[k], str) and t[k].strip() for k in KEYS)
        assert t["category"] in demo.CATEGORIES
        assert t["priority"] in ("low", "normal", "high", "urgent")
        assert t["channel"] in ("email", "chat", "phone", "web")
    assert len({t["id"] for t in tickets}) == N
    assert "{" not in "".join(t["prompt"] + t["completion"] for t in tickets[:2000])  # no unfilled slots


def test_category_mix_is_uneven_like_real_traffic(tickets):
    assert list(demo.CATEGORY_WEIGHTS) == demo.CATEGORIES
    assert sum(demo.CATEGORY_WEIGHTS.values()) == pytest.approx(1.0)
    share = {c: k / N for c, k in Counter(t["category"] for t in tickets).items()}
    assert set(share) == set(demo.CATEGORIES)
    assert 0.40 <= max(share.values()) <= 0.60
    assert sum(1 for s in share.values() if s < 0.02) >= 2


def test_average_length_in_target_range(tickets):
    avg = sum(len(t["prompt"]) + len(t["completion"]) for t in tickets) / N
    assert 700 <= avg <= 900
    assert len({t["prompt"] for t in tickets}) > 0.9 * N  # texts are not trivially identical


def test_write_jsonl_bytes_per_line_and_valid_json(tmp_path, tickets):
    path = tmp_path / "t.jsonl"
    written = demo.write_jsonl(path, N)
    raw = path.read_bytes()
    assert written == len(raw)
    lines = raw.decode("utf-8").splitlines()
    assert len(lines) == N
    assert 700 <= written / N <= 900
    parsed = [json.loads(line) for line in lines]
    assert parsed == tickets  # same records, same key order
    assert all(list(p) == KEYS for p in parsed[:100])
    text = raw.decode("utf-8")
    assert "\\u00" not in text and any(ord(ch) > 127 for ch in text)  # ensure_ascii=False style


def test_near_duplicates_exist(tickets):
    # Candidate partner: the earlier ticket sharing the most rare word 4-grams; difflib is the judge.
    postings, partner = defaultdict(list), {}
    for i, t in enumerate(tickets):
        words = t["prompt"].split()
        grams = set(zip(words, words[1:], words[2:], words[3:]))
        if i % 4 == 0:  # the sample: every 4th ticket
            votes = Counter(j for g in grams if 0 < len(postings[g]) <= 5 for j in postings[g])
            if votes and votes.most_common(1)[0][1] >= 3:
                partner[i] = votes.most_common(1)[0][0]
        for g in grams:
            postings[g].append(i)
    found = sum(1 for i, j in partner.items() if tickets[i]["category"] == tickets[j]["category"]
                and difflib.SequenceMatcher(None, tickets[j]["prompt"], tickets[i]["prompt"]).ratio() > 0.9)
    assert found / (N // 4) >= 0.03
    exact = Counter((t["prompt"], t["completion"]) for t in tickets)
    assert 3 <= sum(k - 1 for k in exact.values() if k > 1) < 0.01 * N  # a handful of exact copies


def test_fake_pii_emails_phones_and_cards(tickets):
    phonenumbers = pytest.importorskip("phonenumbers")
    prompts = [t["prompt"] for t in tickets]
    emails = [m for p in prompts for m in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", p)]
    assert emails
    assert all(e.split("@")[1].endswith(("example.com", "example.org", "example.net")) for e in emails)
    phone_prompts = [p for p in prompts if re.search(r"\+\d", p)]
    valid = []
    for p in phone_prompts[:80]:
        for m in phonenumbers.PhoneNumberMatcher(p, None):
            if phonenumbers.is_valid_number(m.number):
                valid.append(m.raw_string)
    assert valid
    assert len(valid) >= 0.9 * min(len(phone_prompts), 80)  # nearly every embedded number is valid
    cards = [re.sub(r"\D", "", m) for p in prompts for m in re.findall(r"\b\d(?:[ -]?\d){12,18}\b", p)]
    assert any(luhn_ok(c) for c in cards)
    with_pii = sum(1 for p in prompts if "@" in p or re.search(r"\+\d", p) or re.search(r"\d{4}[ -]\d{4}", p))
    assert 0.05 <= with_pii / N <= 0.15


def pc_problem(line: str):
    """Independent validator for prompt/completion lines: None if good, else a short reason."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "invalid json"
    if not isinstance(rec, dict):
        return "not an object"
    for field in ("prompt", "completion"):
        if field not in rec:
            return f"missing {field}"
        if not isinstance(rec[field], str):
            return f"{field} not a string"
        if not rec[field].strip():
            return f"empty {field}"
    return None


def chat_problem(line: str):
    """Independent validator for chat lines: None if good, else a short reason."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "invalid json"
    msgs = rec.get("messages") if isinstance(rec, dict) else None
    if not isinstance(msgs, list) or not msgs:
        return "messages not a list"
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return "bad role"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return "no content"
    if msgs[-1]["role"] != "assistant":
        return "does not end with assistant"
    return None


def test_malformed_prompt_completion_file(tmp_path):
    path = tmp_path / "m.jsonl"
    bad = demo.write_malformed_jsonl(path)
    lines = path.read_text("utf-8").splitlines()
    assert 15 <= len(lines) <= 30
    found = {i + 1: pc_problem(line) for i, line in enumerate(lines)}
    assert {n for n, _ in bad} == {n for n, p in found.items() if p}
    assert all(isinstance(desc, str) and desc for _, desc in bad)
    problems = [found[n] for n, _ in bad]
    assert {"invalid json", "missing completion", "empty completion", "completion not a string",
            "empty prompt"} <= set(problems)
    numeric = [n for n, p in found.items() if p == "completion not a string"]
    assert all(isinstance(json.loads(lines[n - 1])["completion"], (int, float)) for n in numeric)
    assert len(bad) < len(lines) / 2  # most lines are good


def test_malformed_chat_file(tmp_path):
    path = tmp_path / "c.jsonl"
    bad = demo.write_malformed_chat_jsonl(path)
    lines = path.read_text("utf-8").splitlines()
    found = {i + 1: chat_problem(line) for i, line in enumerate(lines)}
    assert {n for n, _ in bad} == {n for n, p in found.items() if p}
    assert {"bad role", "messages not a list", "no content", "does not end with assistant"} <= set(found.values())
    assert any('"bot"' in lines[n - 1] for n, _ in bad)
    assert len(bad) < len(lines) / 2


def test_annotations_design_and_realistic_agreement(tickets):
    rows = demo.generate_annotations(tickets, n_items=300, per_item=3)
    assert rows == demo.generate_annotations(tickets, n_items=300, per_item=3)
    assert rows != demo.generate_annotations(tickets, n_items=300, per_item=3, seed=8)
    assert all(list(r) == ["item_id", "annotator", "question", "value"] for r in rows)
    cat = defaultdict(dict)
    for r in rows:
        if r["question"] == "category":
            assert r["annotator"] not in cat[r["item_id"]]
            cat[r["item_id"]][r["annotator"]] = r["value"]
    assert list(cat) == [t["id"] for t in tickets[:300]]
    assert all(len(labels) == 3 for labels in cat.values())
    per_annotator = Counter(a for labels in cat.values() for a in labels)
    assert set(per_annotator) == {"alice", "bob", "carol", "dave", "erin"}
    assert max(per_annotator.values()) < 300  # not everyone labels everything
    pairs = [(x, y) for labels in cat.values() for x, y in itertools.combinations(labels.values(), 2)]
    agreement = sum(x == y for x, y in pairs) / len(pairs)
    assert 0.5 <= agreement <= 0.95
    truth = {t["id"]: t["category"] for t in tickets[:300]}
    acc = {a: sum(labels[a] == truth[i] for i, labels in cat.items() if a in labels) / per_annotator[a]
           for a in per_annotator}
    assert acc["alice"] > acc["erin"]
    # urgency: ordinal 1-5, same items, a subset of annotators, tracks the ticket priority
    urg = [r for r in rows if r["question"] == "urgency"]
    assert urg and all(r["value"] in (1, 2, 3, 4, 5) for r in urg)
    assert {r["item_id"] for r in urg} <= set(cat)
    assert {r["annotator"] for r in urg} < set(per_annotator)
    prio = {t["id"]: t["priority"] for t in tickets[:300]}
    mean = {p: [r["value"] for r in urg if prio[r["item_id"]] == p] for p in ("low", "urgent")}
    assert sum(mean["urgent"]) / len(mean["urgent"]) > sum(mean["low"]) / len(mean["low"]) + 1.5
    with pytest.raises(ValueError):
        demo.generate_annotations(tickets, annotators=("a", "b"), per_item=3)


def test_make_demo_files(tmp_path):
    paths = demo.make_demo_files(tmp_path / "demo", n=500)
    again = demo.make_demo_files(tmp_path / "demo2", n=500)
    assert set(paths) == {"tickets", "malformed", "malformed_chat", "annotations"}
    for key, path in paths.items():
        assert path.exists() and path.parent == tmp_path / "demo"
        assert path.read_bytes() == again[key].read_bytes()
    assert paths["tickets"].name == "tickets.jsonl"
    assert len(paths["tickets"].read_text("utf-8").splitlines()) == 500
    with open(paths["annotations"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["item_id", "annotator", "question", "value"]
    expected = demo.generate_annotations(list(demo.generate_tickets(300)))
    assert [(r["item_id"], r["annotator"], r["question"], r["value"]) for r in rows] == \
           [(r["item_id"], r["annotator"], r["question"], str(r["value"])) for r in expected]


def test_module_imports_neither_streamlit_nor_duckdb():
    code = "import sys, workbench.data.demo; bad = {'streamlit', 'duckdb'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
