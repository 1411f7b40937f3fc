"""PII detection and redaction: each type with true positives and look-alike negatives, checks against
outside references (phonenumbers' own example numbers, published IBANs, a textbook Luhn), the bulk
DuckDB scan against the per-text scan, and the redacted version."""

import json
import random

import phonenumbers
import pyarrow as pa
import pytest

from workbench.cli.main import main
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import get_version, write_version
from workbench.data.demo import generate_tickets
from workbench.inspect import pii


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
    # order / tracking / reference numbers are ORDER; ACCOUNT only after an account cue or bare and long
    ("order ORD-10234567 and tracking 1Z100000000099", [("ORDER", "ORD-10234567"), ("ORDER", "1Z100000000099")]),
    ("redaction turned order ORD-23517975 into", [("ORDER", "ORD-23517975")]),  # the example
    ("UPS 1Z999AA10123456784 and #40012345", [("ORDER", "1Z999AA10123456784"), ("ORDER", "#40012345")]),
    ("my order number is 87654321, ticket 5512901", [("ORDER", "87654321"), ("ORDER", "5512901")]),
    ("claim WC-1234; order 1234 is short; order on 2024-01-15", [("ORDER", "WC-1234")]),
    ("account #12345678", [("ACCOUNT", "#12345678")]),
    ("my account number is 55501234 and member ID 7788123", [("ACCOUNT", "55501234"), ("ACCOUNT", "7788123")]),
    ("account DE89370400440532013000", [("IBAN", "DE89370400440532013000")]),  # the IBAN check wins
    # names: after a greeting, sign-off, introduction or title; capitalised; not a team or a sentence word
    ("Hi Maria,\n\nthanks", [("NAME", "Maria")]),
    ("Dear Mr. Smith, hello", [("NAME", "Smith")]),
    ("Best regards,\nAlex\nCustomer Support", [("NAME", "Alex")]),
    ("Thanks in advance,\nZoë O'Brien", [("NAME", "Zoë O'Brien")]),
    ("My name is Jürgen Müller and", [("NAME", "Jürgen Müller")]),
    ("I'm Priya, I need help", [("NAME", "Priya")]),
    ("Sincerely,\nDr. Elif Yılmaz", [("NAME", "Elif Yılmaz")]),
    ("Hi team, Dear support team, Hello Aurora Support, Hello there", []),
    ("Best regards,\nThe Support Team", []),
    ("Kind regards,\nCustomer Care", []),
    ("Order Status: shipped. Please Help, My Order Is Late", []),
    ("I'm Sorry, This is Amazon, Thanks for the reply", []),
    ("Maria called yesterday", []),  # no cue: a documented miss
    # postal addresses: house number + street words + suffix, then unit / city / state ZIP / postcode
    ("I live at 123 Main St, Springfield, IL 62704 now", [("ADDRESS", "123 Main St, Springfield, IL 62704")]),
    ("Send it to 10 Downing Street, London SW1A 2AA please", [("ADDRESS", "10 Downing Street, London SW1A 2AA")]),
    ("Deliver to Flat 3, 22 Rosebery Road, Leeds", [("ADDRESS", "Flat 3, 22 Rosebery Road, Leeds")]),
    ("Lieferadresse: Musterstraße 12, 12345 Musterstadt", [("ADDRESS", "Musterstraße 12, 12345 Musterstadt")]),
    ("12 Oak Street\nPlease hurry", [("ADDRESS", "12 Oak Street")]),
    ("Walk down Main Street to the Old Mill Road sign", []),
    ("It broke 2 days ago by the way; we have 12 Summit Standing Desks", []),
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
    assert pii.redact_text(text, hits) == "Mail [EMAIL] or call [PHONE]; card [CARD]; ip [IP]; [ORDER]."
    assert pii.find_pii(pii.redact_text(text, hits)) == []


def test_names_are_redacted_as_whole_words():
    text = "Hi Ben,\n\nthe Benefits plan covers it. Ben, call us.\n\nRegards,\nAnna"
    hits = pii.find_pii(text)
    assert [(h.type, h.value) for h in hits] == [("NAME", "Ben"), ("NAME", "Anna")]
    assert pii.redact_text(text, hits) == ("Hi [NAME],\n\nthe Benefits plan covers it. [NAME], call us.\n\n"
                                           "Regards,\n[NAME]")


def test_mask_hides_the_middle():
    assert pii.mask("maria@example.com", "EMAIL") == "m••••@example.com"
    assert pii.mask("4111 1111 1111 1111", "CARD") == "41•• •••• •••• ••11"


# ---------------------------------------------------------------- a whole version

EXTRA = [
    ("My IBAN is DE89 3704 0044 0532 0130 00, mail me at zoë.x@example.net", "my account number is 55501234"),
    ("Lieferadresse: Musterstraße 12, 12345 Musterstadt\n\nSincerely,\nDr. Elif Yılmaz",
     "Hi O'Brien, UPS 1Z999AA10123456784 left 9 Kingfisher Close, Reading RG1 3AB"),
    ("server at 192.168.0.12 runs version 1.2.3.4", "Call (415) 555-0132 or +49 30 901820"),
    ("nothing here but 2024-05-17 and $12.50", "card 4111 1111 1111 1112 failed"),
]


def make_version(store, n=400):
    tickets = list(generate_tickets(n, seed=4))
    prompts = [t["prompt"] for t in tickets] + [p for p, _ in EXTRA]
    completions = [t["completion"] for t in tickets] + [c for _, c in EXTRA]
    notes = [None] * n + ["backup contact j.doe@example.org", "Thanks, Søren", None, "v2.0.1.7"]
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
    assert after == {**before, "EMAIL": 0, "PHONE": 0, "CARD": 0, "IBAN": 0}
    assert replaced == {t: before[t] for t in ("EMAIL", "PHONE", "CARD", "IBAN")}
    old = store.cursor().execute(f"SELECT prompt, note FROM {version.table_name} ORDER BY _row").fetchall()
    red = store.cursor().execute(f"SELECT prompt, note FROM {new.table_name} ORDER BY _row").fetchall()
    for (p0, n0), (p1, n1) in zip(old, red):
        assert p1 == pii.redact_text(p0, [h for h in pii.find_pii(p0) if h.type in new.recipe["types"]])
        assert n1 == pii.redact_text(n0, [h for h in pii.find_pii(n0) if h.type in new.recipe["types"]])
    assert "[IBAN]" in red[-4][0] and "[EMAIL]" in red[-4][0]
    with pytest.raises(WorkbenchError, match="unknown PII type"):
        pii.redact_version(store, version, "x", types=["SSN"])


def test_cli_pii_report_and_redact(tmp_path, capsys):
    project = str(tmp_path / "p")
    with Store.open(project) as store:
        make_version(store, 100)
    assert main(["pii", "tickets", "--project", project, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["IBAN"] == 1 and report["counts"]["IP"] == 2 and report["records"] == 104
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


# ---------------------------------------------------------------- order numbers are not personal data

def test_default_redaction_keeps_order_numbers_and_replaces_names_and_addresses(store):
    prompts = ["Where is order ORD-23517975? Ship it to 12 Oak Street, Salem, MA 01970.\n\nRegards,\nMaria Kowalski",
               "tracking 1Z100000000099 has not moved"]
    table = pa.table({"prompt": prompts, "completion": ["Hi Maria, order ORD-23517975 left today.", "Sorry!"]})
    version = write_version(store, "orders", [table], kind="import", fmt="prompt-completion", recipe={})
    report = pii.pii_report(store, version)
    assert report["counts"]["ORDER"] == 3 and report["types"]["ORDER"]["personal"] is False
    assert report["records_with_pii"] == 1  # the second record holds only a tracking number
    assert report["personal_types"] == [t for t in pii.TYPES if t != "ORDER"]
    rows = store.cursor().execute(pii.pii_rows_sql(pii.scan(store, version))).fetchall()
    assert rows == [(0,)]  # the browse filter 'pii' follows the personal types
    new, replaced = pii.redact_version(store, version, "orders-clean")
    assert "ORDER" not in new.recipe["types"] and replaced["NAME"] == 2 and replaced["ADDRESS"] == 1
    got = store.cursor().execute(f"SELECT prompt, completion FROM {new.table_name} ORDER BY _row").fetchall()
    assert got[0] == ("Where is order ORD-23517975? Ship it to [ADDRESS].\n\nRegards,\n[NAME]",
                      "Hi [NAME], order ORD-23517975 left today.")
    assert got[1][0] == prompts[1]
    asked, _ = pii.redact_version(store, version, "orders-all", types=["order"])
    assert store.cursor().execute(f"SELECT prompt FROM {asked.table_name} ORDER BY _row").fetchall()[1] == (
        "tracking [ORDER] has not moved",)


def test_cli_redacts_personal_types_by_default(tmp_path, capsys):
    project = str(tmp_path / "p")
    with Store.open(project) as store:
        table = pa.table({"prompt": ["order ORD-23517975 for Dear Mr. Smith"], "completion": ["ok"]})
        write_version(store, "t", [table], kind="import", fmt="prompt-completion", recipe={})
    assert main(["pii", "t", "--project", project]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 records hold personal data" in out and "not personal data" in out.split("ORDER")[1]
    assert main(["pii", "t", "--redact", "--out", "t", "--project", project, "--json"]) == 0
    red = json.loads(capsys.readouterr().out)["redacted"]
    assert red["replaced"] == {"NAME": 1, **{t: 0 for t in pii.PERSONAL if t != "NAME"}}
    with Store.open(project) as store:
        got = store.cursor().execute(f"SELECT prompt FROM {get_version(store, 't@2').table_name}").fetchall()
    assert got == [("order ORD-23517975 for Dear Mr. [NAME]",)]


# ---------------------------------------------------------------- precision and recall on a labelled sample

def test_demo_labels_are_in_the_text():
    tickets = [t for t in generate_tickets(3000, seed=9, labels=True) if t["pii"] is not None]
    kinds = {k for t in tickets for _, k, _ in t["pii"]}
    assert kinds == {"NAME", "ADDRESS", "ORDER", "EMAIL", "PHONE", "CARD"}
    assert all(v in t[f] for t in tickets for f, _, v in t["pii"])
    assert [t["prompt"] for t in generate_tickets(50, seed=9)] == [t["prompt"] for t in
                                                                     generate_tickets(50, seed=9, labels=True)]


def test_precision_and_recall_per_type_on_the_labelled_sample():
    from bench.pii_bench import HAND, HELD_OUT, demo_sample, score

    demo = score(demo_sample(1500, seed=4))
    for kind in ("NAME", "ADDRESS", "ORDER", "EMAIL", "PHONE", "CARD"):
        assert demo[kind]["precision"] >= 0.95 and demo[kind]["recall"] >= 0.95, (kind, demo[kind])
    hard = score(HAND + HELD_OUT)  # hard cases written by hand, with misses the rules cannot avoid
    assert hard["NAME"]["precision"] >= 0.9 and hard["NAME"]["recall"] >= 0.7, hard["NAME"]
    assert hard["ADDRESS"]["precision"] >= 0.8 and hard["ADDRESS"]["recall"] >= 0.6, hard["ADDRESS"]
    assert hard["ORDER"]["precision"] >= 0.9 and hard["ORDER"]["recall"] >= 0.8, hard["ORDER"]
