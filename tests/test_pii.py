"""PII detection and redaction: each type with true positives and look-alike negatives, checks against
outside references (phonenumbers' own example numbers, published IBANs, a textbook Luhn), the bulk
DuckDB scan against the per-text scan, and the redacted version."""

import json
import random

import phonenumbers
import pyarrow as pa
import pytest

from workbench.inspect import pii
from workbench.cli.main import main
from workbench.data.demo import generate_tickets
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version


def kinds(text, region="US"):
    return [(h.type, h.value) for h in pii.find_pii(text, region=region)]


# ---------------------------------------------------------------- one type at a time

@pytest.mark.parametrize("text, expected", [
    # emails
    ("write to maria.garcia+tickets@mail.example.com today", [("EMAIL", "maria.garcia+tickets@mail.example.com")]),
    ("reply to J.O'Brien@example.org.", [("EMAIL", "J.O'Brien@example.org")]),
    ("quoted 'maria@example.com' here", [("EMAIL", "maria@example.com")]),
    ("maria..garcia@example.com", []),  # doubled dot in the local part
    (".maria@example.com", [("EMAIL", "maria@example.com")]),  # the leading dot is not part of the address
    ("user@localhost and @handle", []),
    ("tom@-bad-.example.com", []),
    # phones (international anywhere; national in the region)
    ("call +44 20 7946 0958 after 5pm", [("PHONE", "+44 20 7946 0958")]),
    ("my number: +1 415-555-0132.", [("PHONE", "+1 415-555-0132")]),
    ("US style (415) 555-0132 works", [("PHONE", "(415) 555-0132")]),
    ("it broke on 2024-01-15 and again on 2024-02-03", []),  # dates are not phone numbers
    ("paid $1,234.56 on 12/27", []),
    ("ref 2024.01.15", []),
    # cards (Luhn)
    ("card 4111 1111 1111 1111 please", [("CARD", "4111 1111 1111 1111")]),
    ("card 5105-1051-0510-5100", [("CARD", "5105-1051-0510-5100")]),
    ("amex 3782 822463 10005", [("CARD", "3782 822463 10005")]),
    ("card 4111 1111 1111 1112", []),  # 16 digits that fail Luhn: not a card (and spaced, so no account)
    ("number 4111111111111112 here", [("ACCOUNT", "4111111111111112")]),  # a long number, not a card
    # IBANs (published examples; wrong check digits are not IBANs)
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
    ("DE89370400440532013000", [("IBAN", "DE89370400440532013000")]),
    ("pay to FR14 2004 1010 0505 0001 3M02 606", [("IBAN", "FR14 2004 1010 0505 0001 3M02 606")]),
    ("NL91 ABNA 0417 1643 00 AND MORE", [("IBAN", "NL91 ABNA 0417 1643 00")]),
    ("GB82 WEST 1234 5698 7654 33", []),
    ("DE89370400440532013001", [("ACCOUNT", "DE89370400440532013001")]),  # wrong checksum: a long number
    # IP addresses
    ("from 192.168.1.20 and 8.8.8.8", [("IP", "192.168.1.20"), ("IP", "8.8.8.8")]),
    ("server 2001:db8::8a2e:370:7334 down", [("IP", "2001:db8::8a2e:370:7334")]),
    ("upgrade to version 1.2.3.4 now", []),  # version strings are not addresses
    ("running v10.0.19041.1 and build 3.4.5.6", []),
    ("Release: 2.0.0.1", []),
    ("tuple 1.2.3.4.5 is long", []),
    ("bad 999.1.1.1 and 01.02.03.04", []),
    ("meeting 10:30:00 and MAC 00:1A:2B:3C:4D:5E", []),
    ("prose 1.2.3.4 alone", [("IP", "1.2.3.4")]),  # decision: a bare dotted quad counts as an IP
    # account / order numbers
    ("order ORD-10234567 and tracking 1Z100000000099", [("ACCOUNT", "ORD-10234567"), ("ACCOUNT", "1Z100000000099")]),
    ("account #12345678", [("ACCOUNT", "#12345678")]),
    ("order 1234567 is short", []),
])
def test_each_type_and_its_look_alikes(text, expected):
    assert kinds(text) == expected


def test_phone_region_decides_national_numbers():
    assert kinds("(415) 555-0132", region="US") == [("PHONE", "(415) 555-0132")]
    assert kinds("(415) 555-0132", region="") == []
    assert kinds("020 7946 0958", region="GB") == [("PHONE", "020 7946 0958")]
    assert kinds("+44 20 7946 0958", region="") == [("PHONE", "+44 20 7946 0958")]


@pytest.mark.parametrize("region", ["US", "GB", "DE", "FR", "AU", "IN", "BR", "JP", "CH", "NL", "ES", "IT"])
def test_phonenumbers_own_example_numbers_are_found(region):
    # The outside reference: phonenumbers' example number of each region, written internationally.
    for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
        number = phonenumbers.example_number_for_type(region, kind)
        written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        assert kinds(f"please call {written} tomorrow", region="") == [("PHONE", written)]


def textbook_luhn(number: str) -> bool:
    digits = [int(d) for d in number][::-1]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_luhn_equals_the_textbook_definition():
    rng = random.Random(1)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19))) for _ in range(5000)]
    assert [pii.luhn_ok(n) for n in numbers] == [textbook_luhn(n) for n in numbers]
    for good in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"):
        assert pii.luhn_ok(good)


def test_iban_checksum_on_published_examples_and_single_digit_errors():
    published = ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606",
                 "NL91ABNA0417164300", "BE68539007547034", "CH9300762011623852957", "NO9386011117947",
                 "IT60X0542811101000000123456", "ES9121000418450200051332", "PL61109010140000071219812874"]
    for iban in published:
        assert pii.iban_ok(iban), iban
        for i in range(4, len(iban)):
            if iban[i].isdigit():  # mod 97 catches every single-digit substitution
                wrong = iban[:i] + str((int(iban[i]) + 1) % 10) + iban[i + 1:]
                assert not pii.iban_ok(wrong), wrong
    assert not pii.iban_ok("GB82WEST1234569876543")  # wrong length for GB
    assert not pii.iban_ok("ZZ82WEST12345698765432")  # no such country


def test_redact_text_uses_typed_placeholders():
    text = "Mail a@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111; ip 10.0.0.1; ORD-12345678."
    hits = pii.find_pii(text)
    assert pii.redact_text(text, hits) == "Mail [EMAIL] or call [PHONE]; card [CARD]; ip [IP]; [ACCOUNT]."
    assert pii.find_pii(pii.redact_text(text, hits)) == []


def test_mask_hides_the_middle():
    assert pii.mask("maria@example.com", "EMAIL") == "m••••@example.com"
    assert pii.mask("4111 1111 1111 1111", "CARD") == "41•• •••• •••• ••11"


# ---------------------------------------------------------------- a whole version

EXTRA = [
    ("My IBAN is DE89 3704 0044 0532 0130 00, mail me at zoë.x@example.net", "ok"),
    ("server at 192.168.0.12 runs version 1.2.3.4", "Call (415) 555-0132 or +49 30 901820"),
    ("nothing here but 2024-05-17 and $12.50", "card 4111 1111 1111 1112 failed"),
]


def make_version(store, n=400):
    tickets = list(generate_tickets(n, seed=4))
    prompts = [t["prompt"] for t in tickets] + [p for p, _ in EXTRA]
    completions = [t["completion"] for t in tickets] + [c for _, c in EXTRA]
    notes = [None] * n + ["backup contact j.doe@example.org", None, "v2.0.1.7"]
    chat = json.dumps([{"role": "user", "content": "hi, I'm at 10.1.2.3\n+44 20 7946 0958"},
                       {"role": "assistant", "content": "Noted."}, {"role": "user", "content": prompts[-1]},
                       {"role": "assistant", "content": completions[-1]}])
    table = pa.table({"prompt": prompts, "completion": completions, "system": pa.nulls(len(prompts), pa.string()),
                      "messages": [None] * (len(prompts) - 1) + [chat], "note": notes})
    return write_version(store, "tickets", [table], kind="import", fmt="prompt-completion", recipe={})


def test_bulk_scan_equals_the_per_text_scan(store):
    version = make_version(store)
    path = pii.scan(store, version)
    got = sorted(store.cursor().execute(f"SELECT _row, field, type, value FROM read_parquet('{path}')").fetchall())
    rows = store.cursor().execute(f"SELECT _row, prompt, completion, note, messages FROM {version.table_name}").fetchall()
    expected = sorted((r[0], field, h.type, h.value) for r in rows for field, text in zip(
        ("prompt", "completion", "note", "messages"), r[1:]) for h in pii.find_pii(pii.scanned_text(field, text)))
    assert {(t, v) for _, f, t, v in expected if f == "messages"} == {("IP", "10.1.2.3"),
                                                                      ("PHONE", "+44 20 7946 0958")}
    assert got == expected
    types = {t for _, _, t, _ in got}
    assert types == set(pii.TYPES)
    report = pii.pii_report(store, version)
    assert report["types"]["EMAIL"]["by_field"] == {"prompt": sum(1 for g in got if g[2] == "EMAIL" and
                                                                  g[1] == "prompt"), "note": 1}
    assert report["counts"] == {t: sum(1 for g in got if g[2] == t) for t in pii.TYPES}
    assert report["records_with_pii"] == len({g[0] for g in got})
    assert all("•" in ex["value"] for t in report["types"].values() for ex in t["examples"])


def test_redacted_version_has_no_pii_and_a_recipe(store):
    version = make_version(store, 200)
    new, replaced = pii.redact_version(store, version, "tickets-clean", types=["EMAIL", "PHONE", "CARD", "IBAN"])
    assert new.dataset == "tickets-clean" and new.kind == "redacted" and new.parent_id == version.version_id
    assert new.row_count == version.row_count and new.recipe["op"] == "redact_pii"
    assert new.recipe["types"] == ["EMAIL", "PHONE", "CARD", "IBAN"] and new.recipe["replaced"] == replaced
    after = pii.pii_report(store, new)["counts"]
    before = pii.pii_report(store, version)["counts"]
    assert after == {"EMAIL": 0, "PHONE": 0, "CARD": 0, "IBAN": 0, "IP": before["IP"], "ACCOUNT": before["ACCOUNT"]}
    assert replaced == {t: before[t] for t in ("EMAIL", "PHONE", "CARD", "IBAN")}
    old = store.cursor().execute(f"SELECT prompt, note FROM {version.table_name} ORDER BY _row").fetchall()
    red = store.cursor().execute(f"SELECT prompt, note FROM {new.table_name} ORDER BY _row").fetchall()
    for (p0, n0), (p1, n1) in zip(old, red):
        assert p1 == pii.redact_text(p0, [h for h in pii.find_pii(p0) if h.type in new.recipe["types"]])
        assert n1 == pii.redact_text(n0, [h for h in pii.find_pii(n0) if h.type in new.recipe["types"]])
    assert "[IBAN]" in red[-3][0] and "[EMAIL]" in red[-3][0]
    with pytest.raises(WorkbenchError, match="unknown PII type"):
        pii.redact_version(store, version, "x", types=["SSN"])


def test_cli_pii_report_and_redact(tmp_path, capsys):
    project = str(tmp_path / "p")
    with Store.open(project) as store:
        make_version(store, 100)
    assert main(["pii", "tickets", "--project", project, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["IBAN"] == 1 and report["counts"]["IP"] == 2 and report["records"] == 103
    assert main(["pii", "tickets", "--redact", "--project", project]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["pii", "tickets", "--redact", "--out", "tickets", "--types", "email,iban", "--project", project,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["redacted"]["version"] == 2 and out["redacted"]["replaced"] == {
        "EMAIL": report["counts"]["EMAIL"], "IBAN": 1}
    assert main(["pii", "tickets@2", "--project", project, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["EMAIL"] == again["counts"]["IBAN"] == 0 and again["counts"]["PHONE"] > 0
    assert main(["pii", "tickets", "--phone-region", "XX", "--project", project]) == 1
    assert "not a known region" in capsys.readouterr().err
    with Store.open(project) as store:
        assert get_version(store, "tickets@2").recipe["source"] == "tickets@1"


def test_chat_turns_are_scanned_as_text_not_as_json(store):
    msgs = [{"role": "user", "content": "my card:\n4111 1111 1111 1111"}, {"role": "assistant", "content": "Got it."},
            {"role": "user", "content": "and mail x@example.com"}, {"role": "assistant", "content": "Thanks."}]
    raw = json.dumps(msgs)
    assert [h.type for h in pii.find_pii(raw)] == ["EMAIL"]  # in the JSON text, \n4111 hides the card
    table = pa.table({"prompt": ["and mail x@example.com"], "completion": ["Thanks."],
                      "system": pa.nulls(1, pa.string()), "messages": [raw]})
    version = write_version(store, "chats", [table], kind="import", fmt="chat", recipe={})
    report = pii.pii_report(store, version)
    assert report["types"]["CARD"]["by_field"] == {"messages": 1}
    assert report["types"]["EMAIL"]["by_field"] == {"messages": 1, "prompt": 1}
    new, _ = pii.redact_version(store, version, "chats-clean")
    ((messages, prompt),) = store.cursor().execute(f"SELECT messages, prompt FROM {new.table_name}").fetchall()
    assert [m["content"] for m in json.loads(messages)] == ["my card:\n[CARD]", "Got it.", "and mail [EMAIL]",
                                                            "Thanks."]
    assert prompt == "and mail [EMAIL]"
