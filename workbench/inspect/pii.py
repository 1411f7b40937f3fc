"""Personal data in a dataset version: find it, count it, and redact it into a new version.

Types and their rules (a candidate must pass its check; look-alikes that fail are not reported):

    EMAIL    local@domain.tld; no trailing or doubled dot in the local part, no label of the
             domain starting or ending with '-' (a quote or dot before the address is dropped)
    PHONE    a number `phonenumbers` finds and calls valid (leniency VALID), international `+...`
             anywhere, national formats in the configured region ([pii] phone_region in
             workbench.toml, default US). A date such as 2024-01-15 is not a valid number.
    CARD     13-19 digits (single spaces or dashes between them allowed), starting 2-6, passing Luhn
    IBAN     country code, 2 check digits and the country's registered length, mod-97 == 1
    IP       IPv4 (dotted quad, each part 0-255, no leading zeros) or IPv6, checked by `ipaddress`.
             Decision on version strings: a dotted quad right after "v", "ver", "version",
             "release", "build" or "firmware", or one with more than four parts (1.2.3.4.5), is a
             version number, not an address; any other dotted quad in prose is reported as an IP.
    NAME     a person's name after a cue (greeting, sign-off, "my name is", a title), ADDRESS a street
             address with a house number and a street suffix: rules in `workbench.inspect.pii_names`
    ACCOUNT  a number after an account cue ("account", "acct", "customer/member/client/policy number",
             "... ID", "... no."), or a long number (8+ digits, no letter prefix, no cue) that is none
             of the above: bank and customer numbers are written that way, so it counts as personal
    ORDER    an order, tracking or reference number: a number after an order cue ("order", "tracking",
             "reference", "ref", "ticket", "case", "invoice", "claim", "confirmation", "shipment",
             "parcel", "package", "return", "RMA", "booking", "transaction", "receipt"; optionally
             "number"/"no."/"ID"/"is"/":" between) of 5+ digits or 4+ after a letter prefix (WC-1234),
             or a long number with a letter or '#' prefix and no cue (ORD-12345678, 1Z..., #12345678),
             or a UPS tracking number (1Z and 16 letters or digits).
             NOT personal: it is counted and shown, but not redacted unless asked for, and records
             with only ORDER hits do not count as records with personal data.

How the scan runs on a million records: DuckDB extracts every *candidate* with one RE2 pattern
(`regexp_extract_all`, all text columns, in chunks of rows for a progress bar); only the distinct
candidate strings go through Python, where the checks above decide their type (prefixed and cued
ORDER/ACCOUNT numbers, most candidates in support tickets, are decided in SQL by the same patterns, see
`_settled_in_sql`); DuckDB joins the
verdicts back and writes the hits (`_row`, field, type, value) to the version's cache. The same
pattern and checks run per text in `find_pii`, which the tests use as the brute-force reference.
A chat's `messages` column is scanned as its turns' contents joined by newlines (not as JSON text,
whose escapes such as `\\n4111...` would hide a number).

Redaction (`redact_version`, `workbench pii NAME --redact --out NEW`) writes a new version in which
every value found in a record is replaced, in all of the record's text fields, by its type's
placeholder ([EMAIL], [PHONE], [NAME], [ADDRESS], [CARD], [IBAN], [IP], [ACCOUNT], [ORDER]); by default
the personal types (all but ORDER). NAME and ADDRESS values are replaced as whole words only ("Ben" in
"Benefits" stays). `redacted_batches` streams the same records for an export that must not carry
personal data.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from workbench.core.auth import require_role
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store, quote_ident
from workbench.core.versions import ROW_COLUMN, Version, get_version, version_columns, write_version
from workbench.inspect.cache import cache_path, copy_query, parquet_sql
from workbench.inspect.pii_names import (
    ADDRESS_CANDIDATE,
    NAME_CANDIDATE,
    address_hits,
    is_address_candidate,
    is_name_candidate,
    name_hits,
)

TYPES = ("EMAIL", "PHONE", "NAME", "ADDRESS", "CARD", "IBAN", "IP", "ACCOUNT", "ORDER")
PERSONAL = tuple(t for t in TYPES if t != "ORDER")  # ORDER numbers identify a purchase, not a person
PLACEHOLDERS = {t: f"[{t}]" for t in TYPES}
WORD_TYPES = ("NAME", "ADDRESS")  # replaced as whole words
DEFAULT_REGION = "US"
ALGO = 2
CHUNK_ROWS = 100_000
EXAMPLES = 5

# One candidate pattern, valid and equal in RE2 (DuckDB) and Python `re` with re.ASCII: ASCII classes
# only, no look-arounds, leftmost-first alternation in both engines.
_EMAIL = r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_IBAN = r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}\b"
_VERSION_WORDS = r"(?:[Vv]ersion|VERSION|[Vv]er\.?|[Vv]|[Rr]elease|[Bb]uild|[Ff]irmware)[ :]*"
_IPV4 = rf"\b(?:{_VERSION_WORDS})?[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}(?:\.[0-9]+)*\b"
_IPV6 = r"(?:\b[0-9A-Fa-f]{1,4}|::?[0-9A-Fa-f]{1,4})(?::{1,2}[0-9A-Fa-f]{0,4}){2,7}"
_LONG_NUMBER = r"(?:#|\b[A-Z0-9]{1,4}-?|\b)[0-9]{8,}\b"
_CARD = r"\b[0-9](?:[ -]?[0-9]){12,18}\b"
_PHONE = r"(?:\+|\(|\b)[0-9][0-9 ().-]{5,20}[0-9]"
# A number after a cue word: the cue decides ORDER or ACCOUNT, whatever the number looks like.
_ORDER_CUE = (r"(?:[Oo]rder|ORDER|[Pp]urchase|[Tt]racking|TRACKING|[Rr]eference|REFERENCE|[Rr]ef\.?|REF|[Tt]icket|"
              r"[Cc]ase|[Ii]nvoice|[Cc]laim|[Cc]onfirmation|[Ss]hipment|[Pp]arcel|[Pp]ackage|[Rr]eturn|RMA|[Bb]ooking|"
              r"[Tt]ransaction|[Rr]eceipt)")
_ACCOUNT_CUE = (r"(?:[Aa]ccount|ACCOUNT|[Aa]cct\.?|(?:[Cc]ustomer|[Mm]ember(?:ship)?|[Cc]lient|[Pp]olicy|[Ss]ubscriber|"
                r"[Ll]oyalty) (?:[Nn]umber|[Nn]o\.?|ID|[Ii]d|#))")
_CUE_TAIL = r"(?: (?:[Nn]umber|[Nn]o\.?|[Nn]r\.?|ID|[Ii]d|[Cc]ode))?(?: is| was)?:? ?"
_REF = r"#?(?:1Z[0-9A-Z]{16}|[A-Z][A-Z0-9]{0,3}-?[0-9]{4,}|[0-9]{1,3}[A-Z][A-Z0-9]{0,2}-?[0-9]{4,}|[0-9]{5,})\b"
_CUED = rf"\b(?:{_ACCOUNT_CUE}|{_ORDER_CUE}){_CUE_TAIL}{_REF}"
_UPS = r"\b1Z[0-9A-Z]{16}\b"  # a UPS tracking number
CANDIDATE = "|".join(f"(?:{p})" for p in (_EMAIL, _CUED, NAME_CANDIDATE, ADDRESS_CANDIDATE, _IBAN, _IPV4, _IPV6,
                                          _UPS, _LONG_NUMBER, _CARD, _PHONE))
_CANDIDATE_RE = re.compile(CANDIDATE, re.ASCII)

_EMAIL_RE = re.compile(rf"^{_EMAIL}$", re.ASCII)
_VERSION_RE = re.compile(rf"^{_VERSION_WORDS}", re.ASCII)
_LONG_NUMBER_RE = re.compile(r"(?:[A-Z0-9]{1,4}-?|#)?[0-9]{8,}", re.ASCII)
# Cued numbers (value in group 1): anchored for DuckDB's regexp_extract, fullmatch in Python.
ORDER_CUED = rf"^{_ORDER_CUE}{_CUE_TAIL}({_REF})$"
ACCOUNT_CUED = rf"^{_ACCOUNT_CUE}{_CUE_TAIL}({_REF})$"
_ORDER_CUED_RE = re.compile(ORDER_CUED, re.ASCII)
_ACCOUNT_CUED_RE = re.compile(ACCOUNT_CUED, re.ASCII)
# A long number whose prefix holds a letter or '#' (ORD-12345678, 1Z..., #12345678) is an ORDER number
# unless it starts like an IBAN; such candidates and cued numbers (most of them in support tickets) are
# settled in SQL.
PREFIXED_ORDER = (r"(?:(?:#|[A-Z][A-Z0-9]{0,3}|[0-9][A-Z][A-Z0-9]{0,2}|[0-9]{2}[A-Z][A-Z0-9]?|[0-9]{3}[A-Z])"
                  r"-?[0-9]{8,}|1Z[0-9A-Z]{16})")
IBAN_HEAD = r"^[A-Z]{2}[0-9]{2}"
_PREFIXED_RE = re.compile(PREFIXED_ORDER, re.ASCII)
_CARD_RE = re.compile(r"[0-9](?:[ -]?[0-9]){12,18}", re.ASCII)
_IBAN_HEAD_RE = re.compile(IBAN_HEAD, re.ASCII)

# IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Hit:
    type: str
    value: str
    start: int = -1  # position in the text (find_pii only)


# ---------------------------------------------------------------- checks

def luhn_ok(digits: str) -> bool:
    """The Luhn mod-10 check of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """ISO 13616: the registered length for the country and mod-97 of the rearranged number == 1."""
    compact = compact.upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum() or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def email_ok(value: str) -> bool:
    local, _, domain = value.rpartition("@")
    return bool(_EMAIL_RE.match(value)) and not (local.startswith(".") or local.endswith(".") or ".." in local) \
        and all(label and not label.startswith("-") and not label.endswith("-") for label in domain.split("."))


def _ip(candidate: str) -> list[Hit] | None:
    """IP hits of a candidate, [] when it is a version string or invalid, None when it is not IP-shaped."""
    head = _VERSION_RE.match(candidate) if candidate[:1].isalpha() else None
    if ":" in candidate and "." not in candidate:
        try:
            addr = ipaddress.IPv6Address(candidate)
        except ValueError:
            return None
        return [Hit("IP", candidate)] if sum(ch.isalnum() for ch in candidate) >= 3 and addr.packed else []
    body = candidate[head.end():] if head else candidate
    parts = body.split(".")
    if len(parts) < 4 or not all(p.isdigit() for p in parts):
        return None
    if head or len(parts) > 4:
        return []  # a version number such as v1.2.3.4 or 10.0.19041.1
    try:
        ipaddress.IPv4Address(body)
    except ValueError:
        return []
    return [Hit("IP", body)]


def _iban(candidate: str) -> list[Hit] | None:
    if not _IBAN_HEAD_RE.match(candidate):
        return None
    need = IBAN_LENGTHS.get(candidate[:2])
    if need is None:
        return None
    # The candidate may run into the next word (DE89 3704 ... 00 AND): keep the country's length.
    seen, end = 0, 0
    for end, ch in enumerate(candidate, 1):  # noqa: B007 (the stop position is used below)
        seen += ch != " "
        if seen == need:
            break
    if seen != need:
        return None
    value = candidate[:end]
    return [Hit("IBAN", value)] if iban_ok(value.replace(" ", "")) else None


def _card(candidate: str) -> list[Hit] | None:
    if not _CARD_RE.fullmatch(candidate):
        return None
    digits = candidate.replace(" ", "").replace("-", "")
    if digits[0] in "23456" and luhn_ok(digits):
        return [Hit("CARD", candidate)]
    return None


def _phones(candidate: str, region: str | None) -> list[tuple[int, int]]:
    import phonenumbers

    return [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
        candidate, region or "ZZ", leniency=phonenumbers.Leniency.VALID)]


def is_prefixed_order(candidate: str) -> bool:
    return bool(_PREFIXED_RE.fullmatch(candidate)) and not _IBAN_HEAD_RE.match(candidate)


def _cued(candidate: str) -> tuple[Hit, ...] | None:
    """An ORDER or ACCOUNT number after its cue word (an IBAN after the cue stays an IBAN); None when the
    candidate is no cued number."""
    for kind, pattern in (("ACCOUNT", _ACCOUNT_CUED_RE), ("ORDER", _ORDER_CUED_RE)):
        m = pattern.fullmatch(candidate)
        if m:
            value = m.group(1)
            if _IBAN_HEAD_RE.match(value):
                return tuple(_iban(value) or (Hit(kind, value),))
            return (Hit(kind, value),)
    return None


@lru_cache(maxsize=50_000)
def classify(candidate: str, region: str | None = DEFAULT_REGION) -> tuple[Hit, ...]:
    """The PII hits in one candidate string (what the pattern extracted); () when none."""
    if "@" in candidate:
        value = candidate.lstrip(".'")  # a quote or full stop before the address is prose, not address
        return (Hit("EMAIL", value),) if email_ok(value) else ()
    if is_prefixed_order(candidate):
        return (Hit("ORDER", candidate),)
    if candidate[:1].isalpha():
        hits = _cued(candidate)
        if hits is not None:
            return hits
        if is_name_candidate(candidate):
            return tuple(Hit(k, v) for k, v in name_hits(candidate))
    if is_address_candidate(candidate):
        return tuple(Hit(k, v) for k, v in address_hits(candidate))
    for check in (_ip, _iban, _card):
        hits = check(candidate)
        if hits is not None:
            return tuple(hits)
    if "+" in candidate or "(" in candidate or " " in candidate or "-" in candidate or "." in candidate \
            or candidate.isdigit():
        spans = _phones(candidate, region)
        if spans:
            hits = [Hit("PHONE", candidate[a:b]) for a, b in spans]
            rest = [candidate[a:b] for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [None])]
            for piece in rest:  # a card or account number written right after a phone number
                for m in _CANDIDATE_RE.finditer(piece):
                    if m.group() != candidate:
                        hits += [h for h in classify(m.group(), region) if h.type != "PHONE"]
            return tuple(hits)
    if _LONG_NUMBER_RE.fullmatch(candidate):
        return (Hit("ACCOUNT", candidate),)
    return ()


def find_pii(text: str | None, *, region: str | None = DEFAULT_REGION, types=TYPES) -> list[Hit]:
    """Every hit in one text, in order (the per-text reference of the bulk scan)."""
    if not text:
        return []
    out = []
    for m in _CANDIDATE_RE.finditer(text):
        for h in classify(m.group(), region):
            if h.type in types:
                out.append(Hit(h.type, h.value, m.start() + m.group().find(h.value)))
    return out


def redact_text(text: str | None, hits, placeholders: dict[str, str] = PLACEHOLDERS) -> str | None:
    """text with every occurrence of each hit's value replaced by its type's placeholder."""
    if not text or not hits:
        return text
    for value, kind in sorted({(h[1], h[0]) if isinstance(h, tuple) else (h.value, h.type) for h in hits},
                              key=lambda vk: -len(vk[0])):  # longer values first: a phone inside a longer hit
        if kind in WORD_TYPES:  # a name as a whole word only: "Ben" stays in "Benefits"
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", lambda _, p=placeholders[kind]: p, text)
        else:
            text = text.replace(value, placeholders[kind])
    return text


def mask(value: str, kind: str) -> str:
    """An example shown to people: enough to recognise, not enough to copy."""
    if kind == "EMAIL":
        local, _, domain = value.partition("@")
        return f"{local[:1]}{'•' * max(len(local) - 1, 1)}@{domain}"
    keep = [i for i, ch in enumerate(value) if ch.isalnum()]
    shown = set(keep[:2] + keep[-2:]) if len(keep) > 6 else set(keep[:1])
    return "".join(ch if (i in shown or not ch.isalnum()) else "•" for i, ch in enumerate(value))


# ---------------------------------------------------------------- a whole version

def _settled_in_sql() -> str:
    """A SQL expression of `cand`: the struct (type, value) of an ORDER or ACCOUNT number that needs no
    Python check (a prefixed number, or a cued one that does not start like an IBAN), else NULL; the same
    decisions as `classify`."""
    def cued(kind: str, pattern: str) -> str:
        value = f"regexp_extract(cand, '{pattern}', 1)"
        return (f"WHEN regexp_full_match(cand, '{pattern}') AND NOT regexp_matches({value}, '{IBAN_HEAD}') "
                f"THEN {{'type': '{kind}', 'value': {value}}}")
    return (f"CASE WHEN cand LIKE '%@%' THEN NULL "
            f"WHEN regexp_full_match(cand, '{PREFIXED_ORDER}') AND NOT regexp_matches(cand, '{IBAN_HEAD}') "
            f"THEN {{'type': 'ORDER', 'value': cand}} {cued('ACCOUNT', ACCOUNT_CUED)} {cued('ORDER', ORDER_CUED)} "
            f"ELSE NULL END")


def _region(store: Store, region: str | None) -> str:
    if region is None:
        region = store.project.setting("pii", "phone_region", DEFAULT_REGION)
    region = (region or "").strip().upper()  # '' means international numbers only
    if region:
        import phonenumbers

        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise WorkbenchError(f"phone region {region!r} is not a known region code; use a two-letter code such "
                                 "as US, GB or DE, or '' for international numbers only")
    return region


def _scanned_text(field: str) -> str:
    """What is scanned of a column: `messages` (a JSON list of turns) as its contents joined by newlines, so
    an escape such as \\n4111... does not hide a number from the pattern; any other column as it is."""
    if field == "messages":
        return ("list_aggregate(list_transform(from_json(messages, '[{\"role\": \"VARCHAR\", \"content\": "
                "\"VARCHAR\"}]'), lambda m: m.content), 'string_agg', chr(10))")
    return quote_ident(field)


def scanned_text(field: str, value: str | None) -> str | None:
    """The Python twin of `_scanned_text`, for one value."""
    if field == "messages" and value:
        return "\n".join(m.get("content") or "" for m in json.loads(value))
    return value


def text_columns(store: Store, version: Version) -> list[str]:
    return [c for c, t in version_columns(store, version) if t.upper() == "VARCHAR"]


def _scan_path(store: Store, version: Version, region: str | None):
    return cache_path(store, version, "pii", f"a{ALGO}-{_region(store, region) or 'intl'}")


def is_scanned(store: Store, version: Version, *, region: str | None = None) -> bool:
    return _scan_path(store, version, region).exists()


def scan(store: Store, version: Version, *, region: str | None = None, progress: Progress | None = None):
    """The version's PII hits (`_row`, field, type, value), computed once per version and region."""
    progress = progress or (lambda fraction, message: None)
    region = _region(store, region)
    path = _scan_path(store, version, region)
    if path.exists():
        return path
    fields = text_columns(store, version)
    cur = store.con.cursor()
    try:
        cur.execute("CREATE OR REPLACE TEMP TABLE wb_pii_candidates (_row BIGINT, field VARCHAR, cand VARCHAR, "
                    "s STRUCT(type VARCHAR, value VARCHAR))")
        pattern = CANDIDATE.replace("'", "''")
        unions = " UNION ALL ".join(
            f"SELECT {ROW_COLUMN}, '{f}' AS field, unnest(regexp_extract_all({_scanned_text(f)}, '{pattern}')) "
            f"AS cand FROM {version.table_name} WHERE {ROW_COLUMN} >= $lo AND {ROW_COLUMN} < $hi "
            f"AND {quote_ident(f)} IS NOT NULL" for f in fields)
        n = max(version.row_count, 1)
        for lo in range(0, n, CHUNK_ROWS):
            progress(0.9 * lo / n, f"scanning records {lo + 1:,}–{min(lo + CHUNK_ROWS, n):,}")
            cur.execute(f"INSERT INTO wb_pii_candidates SELECT *, {_settled_in_sql()} FROM ({unions})",
                        {"lo": lo, "hi": lo + CHUNK_ROWS})
        progress(0.9, "checking candidates")
        distinct = [r[0] for r in cur.execute(
            "SELECT DISTINCT cand FROM wb_pii_candidates WHERE s IS NULL").fetchall()]
        verdicts = {"cand": [], "type": [], "value": []}
        check = classify.__wrapped__  # distinct values: a cache would only cost
        for cand in distinct:
            for h in check(cand, region):
                verdicts["cand"].append(cand)
                verdicts["type"].append(h.type)
                verdicts["value"].append(h.value)
        cur.register("wb_pii_verdicts", pa.table(verdicts, schema=pa.schema(
            [("cand", pa.string()), ("type", pa.string()), ("value", pa.string())])))
        progress(0.95, "writing hits")
        copy_query(cur, "SELECT _row, field, type, value FROM ("
                        "SELECT c._row, c.field, v.type, v.value FROM wb_pii_candidates c "
                        "JOIN wb_pii_verdicts v ON c.s IS NULL AND c.cand = v.cand "
                        "UNION ALL SELECT _row, field, s.type, s.value FROM wb_pii_candidates WHERE s IS NOT NULL) "
                        "ORDER BY _row, field", path)
    finally:
        try:
            cur.execute("DROP TABLE IF EXISTS wb_pii_candidates")
        finally:
            cur.close()
    progress(1.0, "done")
    return path


def pii_report(store: Store, version: Version, *, region: str | None = None, progress: Progress | None = None,
               examples: int = EXAMPLES) -> dict:
    """Counts per type (records, occurrences, by field, personal or not) with masked examples;
    records_with_pii counts the records with a personal type (ORDER numbers alone do not count)."""
    path = scan(store, version, region=region, progress=progress)
    src = parquet_sql(path)
    cur = store.cursor()
    by_type = {t: {"records": 0, "occurrences": 0, "by_field": {}, "examples": [], "personal": t in PERSONAL}
               for t in TYPES}
    for kind, records, occ in cur.execute(
            f"SELECT type, count(DISTINCT {ROW_COLUMN}), count(*) FROM {src} GROUP BY type").fetchall():
        by_type[kind].update(records=records, occurrences=occ)
    for kind, field, occ in cur.execute(
            f"SELECT type, field, count(*) FROM {src} GROUP BY ALL ORDER BY 3 DESC").fetchall():
        by_type[kind]["by_field"][field] = occ
    for kind, row, field, value in cur.execute(
            f"SELECT type, {ROW_COLUMN}, field, value FROM (SELECT *, row_number() OVER (PARTITION BY type "
            f"ORDER BY {ROW_COLUMN}) AS k FROM {src}) WHERE k <= {int(examples)} ORDER BY type, k").fetchall():
        by_type[kind]["examples"].append({"row": row + 1, "field": field, "value": mask(value, kind)})
    with_any = cur.execute(f"SELECT count(DISTINCT {ROW_COLUMN}) FROM {src} WHERE type IN ({_sql_list(PERSONAL)})"
                           ).fetchall()[0][0]
    return {"dataset": version.dataset, "version": version.number, "records": version.row_count,
            "records_with_pii": with_any, "counts": {t: v["occurrences"] for t, v in by_type.items()},
            "types": by_type, "personal_types": list(PERSONAL), "phone_region": _region(store, region)}


def _sql_list(kinds) -> str:
    return ", ".join(f"'{k}'" for k in kinds if k in TYPES)


def pii_rows_sql(path, kinds=PERSONAL) -> str:
    """A subquery of the `_row`s that hold PII of some types (default: the personal ones), for browse filters."""
    return f"SELECT DISTINCT {ROW_COLUMN} FROM {parquet_sql(path)} WHERE type IN ({_sql_list(kinds or PERSONAL)})"


def _check_types(types) -> tuple[str, ...]:
    types = tuple(t.upper() for t in types)
    unknown = [t for t in types if t not in TYPES]
    if unknown or not types:
        raise WorkbenchError(f"unknown PII type {', '.join(unknown) or '(none)'}; choose from {', '.join(TYPES)}")
    return types


def redacted_batches(store: Store, version: Version, *, types=PERSONAL, region: str | None = None,
                     progress: Progress | None = None, replaced: dict | None = None) -> Iterator[pa.Table]:
    """The version's records in order (record columns only), with the PII of the chosen types replaced by
    placeholders; for a new version (`redact_version`) or for an export that must not carry PII.
    replaced, when given, collects the number of values replaced per type."""
    types = _check_types(types)
    progress = progress or (lambda fraction, message: None)
    path = scan(store, version, region=region, progress=lambda f, m: progress(0.3 * f, m))
    replaced = replaced if replaced is not None else {}
    for t in types:
        replaced.setdefault(t, 0)
    kinds = _sql_list(types)
    fields = text_columns(store, version)
    cur = store.con.cursor()
    hits_cur = store.con.cursor()
    try:
        reader = cur.sql(f"SELECT * FROM {version.table_name}").to_arrow_reader(50_000)
        done = 0
        for batch in reader:
            table = pa.Table.from_batches([batch])
            rows = table.column(ROW_COLUMN).to_numpy()
            lo, hi = int(rows.min()), int(rows.max())
            hits: dict[int, set] = {}
            for row, kind, value in hits_cur.execute(
                    f"SELECT {ROW_COLUMN}, type, value FROM {parquet_sql(path)} WHERE {ROW_COLUMN} "
                    f"BETWEEN {lo} AND {hi} AND type IN ({kinds})").fetchall():
                hits.setdefault(row, set()).add((kind, value))
                replaced[kind] += 1
            table = table.drop_columns([ROW_COLUMN])
            if hits:
                # Every value found in a record is replaced in all its text fields (a chat's turns are
                # also in `prompt`/`completion`), so no copy of it survives anywhere in the record.
                position = [(int(np.searchsorted(rows, r)), found) for r, found in hits.items()]
                for field in fields:
                    values = table.column(field).to_pylist()
                    for i, found in position:
                        values[i] = redact_text(values[i], found)
                    idx = table.column_names.index(field)
                    table = table.set_column(idx, field, pa.array(values, table.schema.field(field).type))
            done += table.num_rows
            progress(0.3 + 0.7 * done / max(version.row_count, 1), f"redacted {done:,} records")
            yield table
    finally:
        cur.close()
        hits_cur.close()


def redact_version(store: Store, version: Version, out: str, *, types=PERSONAL, region: str | None = None,
                   progress: Progress | None = None, created_by: str | None = None, user=None) -> tuple[Version, dict]:
    """A new version of dataset `out` with the PII of the chosen types replaced by placeholders; its recipe
    records the source, the types, the placeholders and how many values were replaced."""
    require_role(user, "write_version")
    types = _check_types(types)
    progress = progress or (lambda fraction, message: None)
    region = _region(store, region)
    replaced = {t: 0 for t in types}
    recipe = lambda: {"op": "redact_pii", "source": version.ref, "source_version_id": version.version_id,  # noqa: E731
                      "types": list(types), "placeholders": {t: PLACEHOLDERS[t] for t in types},
                      "replaced": dict(replaced), "phone_region": region}
    batches = redacted_batches(store, version, types=types, region=region, progress=progress, replaced=replaced)
    new = write_version(store, out, batches, kind="redacted", fmt=version.format, recipe=recipe,
                        info=dict(version.info), parent_id=version.version_id, created_by=created_by)
    progress(1.0, f"wrote {new.ref}")
    return new, dict(replaced)


def redact_ref(store: Store, ref: str, out: str, **kwargs) -> tuple[Version, dict]:
    return redact_version(store, get_version(store, ref), out, **kwargs)
