"""Import: every file kind and format, column mapping, exact error reports, quarantine, versions."""

import csv
import json

import datasets
import pandas as pd
import pytest

from tests.conftest import write_jsonl
from workbench.core.errors import WorkbenchError
from workbench.core.versions import get_version, list_datasets, list_versions
from workbench.data.importer import ImportRejected, import_file, quarantine


def version_tables(store) -> int:
    sql = "SELECT count(*) FROM duckdb_views() WHERE regexp_matches(view_name, '^wb_v[0-9]+$')"
    folders = list(store.project.data_dir.iterdir())
    return store.cursor().execute(sql).fetchall()[0][0] + len(folders)


def rows(store, ref, cols="prompt, completion, system, messages"):
    v = get_version(store, ref)
    return store.cursor().execute(f"SELECT {cols} FROM {v.table_name} ORDER BY _row").fetchall()


PC = [{"id": "a1", "prompt": "Where is my parcel?", "completion": "It ships tomorrow.", "category": "shipping"},
      {"id": "a2", "prompt": "Refund please", "completion": "Refund issued.", "category": "refund", "intent": "r"}]


def test_banking77_csv_matches_the_file(store, banking_dir):
    path = banking_dir / "train.csv"
    with open(path, newline="", encoding="utf-8") as f:
        ref = list(csv.DictReader(f))  # the standard library as the outside reference
    result = import_file(store, path, "banking")
    assert result.imported == len(ref) == 10003
    assert result.format == "classification"
    v = result.version
    got = store.cursor().execute(f"SELECT prompt, category FROM {v.table_name} ORDER BY _row").fetchall()
    assert got == [(r["text"], r["category"]) for r in ref]
    assert len({r["category"] for r in ref}) == 77
    assert v.recipe["file_kind"] == "csv" and v.row_count == 10003 and len(v.content_hash) == 64


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "hf"])
def test_every_file_kind_gives_the_same_records_and_hash(store, tmp_path, kind):
    path = tmp_path / f"data.{kind}"
    if kind == "jsonl":
        write_jsonl(path, PC)
    elif kind == "json":
        path.write_text(json.dumps(PC))
    elif kind == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "prompt", "completion", "category", "intent"])
            w.writeheader()
            w.writerows(PC)
    elif kind == "parquet":
        pd.DataFrame(PC).to_parquet(path)
    else:
        datasets.Dataset.from_pandas(pd.DataFrame(PC), preserve_index=False).save_to_disk(str(path))
    result = import_file(store, path, "t")
    assert result.format == "prompt-completion"
    assert rows(store, "t") == [(r["prompt"], r["completion"], None, None) for r in PC]
    assert rows(store, "t", "id, category, intent") == [("a1", "shipping", None), ("a2", "refund", "r")]
    reference = import_file(store, write_jsonl(tmp_path / "ref.jsonl", PC), "ref").version.content_hash
    assert result.version.content_hash == reference


def test_chat_alpaca_and_classification(store, tmp_path):
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}], "category": "greet"},
            {"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
                          {"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}]}]
    import_file(store, write_jsonl(tmp_path / "chat.jsonl", chat), "chat")
    got = rows(store, "chat")
    assert got[0] == ("Hi", "Hello", "Be brief.", None)
    assert got[1][:3] == ("C", "D", None) and json.loads(got[1][3]) == chat[1]["messages"]

    alpaca = [{"instruction": "Summarise", "input": "Long text", "output": "Short"},
              {"instruction": "Say hi", "input": "", "output": "hi"}]
    assert import_file(store, write_jsonl(tmp_path / "a.jsonl", alpaca), "alp").format == "alpaca"
    assert rows(store, "alp") == [("Summarise\n\nLong text", "Short", None, None), ("Say hi", "hi", None, None)]

    cls = tmp_path / "c.csv"
    cls.write_text("sentence,intent,id\nI lost my card,lost_card,7\nNew PIN?,pin,8\n")
    r = import_file(store, cls, "cls")
    assert r.format == "classification" and r.version.label_column == "intent"
    assert rows(store, "cls", "prompt, completion, intent, id") == [("I lost my card", None, "lost_card", "7"),
                                                                     ("New PIN?", None, "pin", "8")]


def test_explicit_column_mapping(store, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"asked": "Q1", "said": "A1", "team": "x"}])  # no known names
    with pytest.raises(WorkbenchError, match="cannot tell the format"):
        import_file(store, path, "qa")
    import_file(store, path, "qa", prompt_col="asked", completion_col="said")
    assert rows(store, "qa", "prompt, completion, team") == [("Q1", "A1", "x")]
    with pytest.raises(WorkbenchError, match="'nope' .*not in the file"):
        import_file(store, path, "qa", prompt_col="nope", completion_col="said")
    r = import_file(store, path, "qa2", fmt="classification", text_col="asked", label_col="team")
    assert r.format == "classification"


BAD = [
    ('{"prompt": "ok", "completion": "fine"}', None, None),
    ('{"prompt": "broken", "completion": "x"', None, "malformed JSON"),
    ('{"prompt": "no completion"}', "completion", "`completion` is missing"),
    ('{"prompt": "empty", "completion": ""}', "completion", "`completion` is empty"),
    ('{"prompt": "   ", "completion": "x"}', "prompt", "`prompt` is empty"),
    ('{"prompt": "num", "completion": 5}', "completion", "is a number; expected text"),
    ('["not", "an", "object"]', None, "expected an object"),
    ('{"prompt": "ok2", "completion": "fine2"}', None, None),
]


def test_fail_reports_every_bad_line_and_imports_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [line for line, _, _ in BAD])
    with pytest.raises(ImportRejected) as info:
        import_file(store, path, "bad")
    errors = info.value.result.errors
    expected = [(i + 1, f, m) for i, (_, f, m) in enumerate(BAD) if m]
    assert [(e["line"], e["field"]) for e in errors] == [(n, f) for n, f, _ in expected]
    for e, (_, _, m) in zip(errors, expected):
        assert m in e["error"]
    assert "\n" not in str(info.value)
    assert list_datasets(store) == []
    assert version_tables(store) == 0


def test_skip_imports_good_rows_and_quarantines_bad(store, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [line for line, _, _ in BAD])
    r = import_file(store, path, "bad", on_error="skip")
    assert (r.imported, r.skipped) == (2, 6)
    assert rows(store, "bad", "prompt") == [("ok",), ("ok2",)]
    q = quarantine(store, "bad")
    assert [x["line"] for x in q] == [2, 3, 4, 5, 6, 7]
    assert q[0]["raw"] == BAD[1][0] and q[0]["version_id"] == r.version.version_id
    assert r.version.recipe["skipped"] == 6


def test_many_errors_are_all_counted(store, tmp_path):
    lines = [{"prompt": f"p{i}", "completion": "" if i % 2 else "c"} for i in range(100)]
    with pytest.raises(ImportRejected) as info:
        import_file(store, write_jsonl(tmp_path / "m.jsonl", lines), "m")
    assert info.value.result.error_count == 50
    assert [e["line"] for e in info.value.result.errors] == list(range(2, 101, 2))


def test_chat_errors_name_the_message(store, tmp_path):
    lines = [{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
             {"messages": [{"role": "user", "content": "hi"}]},
             {"messages": "hello"}]
    with pytest.raises(ImportRejected) as info:
        import_file(store, write_jsonl(tmp_path / "c.jsonl", lines), "c")
    errs = info.value.result.errors
    assert errs[0] == {"line": 1, "field": "messages[1].role",
                       "error": "`messages[1].role` is 'bot'; expected one of system, user, assistant"}
    assert "does not end with an assistant message" in errs[1]["error"]
    assert errs[2]["field"] == "messages"


def test_non_utf8_empty_and_huge_fields(store, tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "ok", "completion": "x"}\n{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(ImportRejected) as info:
        import_file(store, bad, "l")
    assert info.value.result.errors[0]["line"] == 2 and "not valid UTF-8" in info.value.result.errors[0]["error"]

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(WorkbenchError, match="is empty"):
        import_file(store, empty, "e")
    header_only = tmp_path / "h.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(WorkbenchError):
        import_file(store, header_only, "h")

    huge = write_jsonl(tmp_path / "huge.jsonl", [{"prompt": "p", "completion": "x" * 10_000_000}])
    with pytest.raises(ImportRejected) as info:
        import_file(store, huge, "huge")
    err = info.value.result.errors[0]
    assert err["line"] == 1 and err["field"] == "completion" and "10.0 MB; the limit is 1 MB" in err["error"]


def test_csv_errors_name_physical_lines(store, tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"first line\nsecond line",a\n"",b\nfine,c\nx,y,z\n')
    with pytest.raises(ImportRejected) as info:
        import_file(store, path, "m")
    assert [(e["line"], e["field"]) for e in info.value.result.errors] == [(4, "text"), (6, None)]


def test_versions_are_immutable_and_linked(store, tmp_path):
    p1 = write_jsonl(tmp_path / "1.jsonl", PC)
    v1 = import_file(store, p1, "d").version
    v2 = import_file(store, p1, "d").version
    v3 = import_file(store, write_jsonl(tmp_path / "2.jsonl", PC[:1]), "d").version
    assert (v1.number, v2.number, v3.number) == (1, 2, 3)
    assert v1.parent_id is None and v2.parent_id == v1.version_id and v3.parent_id == v2.version_id
    assert v1.content_hash == v2.content_hash != v3.content_hash
    assert [v.row_count for v in list_versions(store, "d")] == [2, 2, 1]
    assert rows(store, "d@1") == rows(store, "d@2") and len(rows(store, "d")) == 1
    assert v1.recipe["source"] == str(p1) and v1.recipe["format"] == "prompt-completion"


def test_an_interrupted_import_leaves_nothing(store, tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", ({"prompt": f"p{i}" * 50, "completion": "c" * 200}
                                                for i in range(60_000)))

    def boom(fraction, message):
        if 0 < fraction < 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(store, big, "big", progress=boom)
    assert list_datasets(store) == []
    assert version_tables(store) == 0
    assert import_file(store, big, "big").imported == 60_000


def test_bad_names_and_paths(store, tmp_path):
    with pytest.raises(WorkbenchError, match="not allowed"):
        import_file(store, tmp_path / "x.jsonl", "../evil")
    with pytest.raises(WorkbenchError, match="no such file"):
        import_file(store, tmp_path / "missing.jsonl", "ok")


def test_a_version_whose_columns_change_midway_keeps_order_and_values(store):
    import pyarrow as pa

    from workbench.core.versions import iter_version, write_version

    none = pa.nulls(1, pa.string())
    first = pa.table({"prompt": ["a"], "completion": ["b"], "system": none, "messages": none, "x": [1]})
    later = pa.table({"prompt": ["c"], "completion": ["d"], "system": none, "messages": none, "x": ["s"], "y": [2.5]})
    v = write_version(store, "m", [first, later, first], kind="test", fmt="prompt-completion", recipe={})
    got = [r for t in iter_version(store, v) for r in t.to_pylist()]
    assert [(r["prompt"], r["x"], r["y"]) for r in got] == [("a", "1", None), ("c", "s", 2.5), ("a", "1", None)]
    assert v.row_count == 3


# ------------------------------------------------------------ depth, width and apostrophes

DEEP = 10_000  # an attacker's choice, not a realistic file


def test_a_jsonl_line_nested_10000_deep_is_one_bad_row(store, tmp_path):
    """Arrow's JSON reader overflowed its stack (a segfault) on this line; the bracket scan sees it first."""
    deep = '{"prompt": "p", "completion": "c", "meta": ' + "[" * DEEP + "]" * DEEP + "}"
    path = write_jsonl(tmp_path / "deep.jsonl", ['{"prompt": "fine", "completion": "row"}', deep])
    with pytest.raises(ImportRejected) as info:
        import_file(store, path, "deep")
    assert [(e["line"], e["error"]) for e in info.value.result.errors] == [
        (2, "`meta` is nested more than 32 levels deep; flatten it or leave the column out")]
    skipped = import_file(store, path, "deep", on_error="skip")
    assert skipped.imported == 1 and skipped.skipped == 1


def test_brackets_inside_strings_do_not_count(store, tmp_path):
    text = "[" * DEEP + '\\"' + "]" * DEEP
    path = write_jsonl(tmp_path / "strings.jsonl", ['{"prompt": "' + text + '", "completion": "{{{"}'])
    assert import_file(store, path, "strings").imported == 1
    assert rows(store, "strings", "prompt")[0][0] == "[" * DEEP + '"' + "]" * DEEP


def test_closing_brackets_in_a_string_cannot_hide_depth(store, tmp_path):
    line = '{"prompt": "' + "]" * DEEP + '", "completion": "c", "meta": ' + "[" * DEEP + "]" * DEEP + "}"
    with pytest.raises(ImportRejected, match="1 bad row"):
        import_file(store, write_jsonl(tmp_path / "hide.jsonl", [line]), "hide")


@pytest.mark.parametrize("document", [
    "[" + '{"prompt": "p", "completion": "c", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}]",
    '{"prompt": "p", "completion": "c", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "[" * 100_000 + "]" * 100_000,
])
def test_a_json_document_nested_100000_deep_is_a_user_error(store, tmp_path, document):
    """json.load recursed once per level: `internal error: RecursionError`."""
    path = tmp_path / "deep.json"
    path.write_text(document)
    with pytest.raises(WorkbenchError, match="nested more than 32 levels deep") as info:
        import_file(store, path, "deepdoc")
    assert "\n" not in str(info.value)


def test_a_wide_file_imports_every_column(store, tmp_path):
    keys = [f"key_{j}" for j in range(3000)]
    records = [{"prompt": f"p{i}", "completion": "c", **{k: f"{i}-{k}" for k in keys}} for i in range(5)]
    with open(tmp_path / "wide.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    v = import_file(store, tmp_path / "wide.csv", "wide").version
    j = import_file(store, write_jsonl(tmp_path / "wide.jsonl", records), "widej").version
    assert v.content_hash == j.content_hash
    got = store.cursor().execute(f'SELECT "key_2999" FROM {v.table_name} ORDER BY _row').fetchall()
    assert got == [(f"{i}-key_2999",) for i in range(5)]


def test_an_apostrophe_from_another_tool_is_kept(store, tmp_path):
    """Only our own export's formula escapes are undone; `'-) wink` from a spreadsheet is text."""
    path = tmp_path / "other.csv"
    cells = ["'-) wink", "'=1", "'@home", "''double", "plain"]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("prompt", "completion")] + [(c, "x") for c in cells])
    v = import_file(store, path, "other").version
    assert [r[0] for r in rows(store, "other", "prompt")] == cells
    assert v.row_count == len(cells)


def test_our_csv_export_is_marked_only_when_it_escaped(store, tmp_path):
    from workbench.data.export import CSV_ESCAPE_MARKER, export_version

    risky = [{"prompt": "=SUM(A1)", "completion": "'-) wink"}, {"prompt": "-2", "completion": "ok"}]
    src = import_file(store, write_jsonl(tmp_path / "r.jsonl", risky), "risky").version
    out = export_version(store, src, "csv", tmp_path / "r.csv")
    with open(out["path"], newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["prompt", "completion", CSV_ESCAPE_MARKER]
    assert table[1][:2] == ["'=SUM(A1)", "''-) wink"]
    again = import_file(store, out["path"], "risky2").version
    assert again.content_hash == src.content_hash
    assert rows(store, "risky2", "prompt, completion") == [("=SUM(A1)", "'-) wink"), ("-2", "ok")]
    plain = import_file(store, write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "completion": "b"}]), "p").version
    with open(export_version(store, plain, "csv", tmp_path / "p.csv")["path"], newline="") as f:
        assert next(csv.reader(f)) == ["prompt", "completion"]
