"""Hostile input, property-based: whatever a file or a query holds, the importers and the SQL
console either store it safely or say clearly what is wrong. Never a crash, never a write
outside the project folder, and hostile text survives export and re-import exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import check_name, iter_version
from workbench.data.export import export_version
from workbench.data.importer import ImportRejected, import_file
from workbench.data.sqlconsole import run_readonly
from workbench.data.uploads import safe_filename, save_upload

pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE_TEXT = [
    "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", "'quoted",
    "<script>alert('x')</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)",
    "'; DROP TABLE wb_versions; --", "\"\"\"", "a,b,\"c\"\n", "line1\r\nline2", "\u202eevil\u202c",
    "\x00nul", "\ufeffbom", "😀 emoji", "   ", "\\N", "NULL", "null", "../../etc/passwd", "%s%n%x",
]

# Text that a CSV or JSON reader must keep exactly (control characters other than tab/newline
# are legal in JSON strings but a spreadsheet cell cannot hold NUL, so they stay out of CSV).
text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(min_size=1, max_size=60))


class Project:
    """A throwaway project whose folder is watched for writes outside it."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.base = Path(self.tmp.name)
        self.root = self.base / "project"
        self.outside = self.base / "outside"
        self.outside.mkdir()
        self.store = Store.open(self.root)

    def files_outside(self) -> list[str]:
        return sorted(str(p.relative_to(self.base)) for p in self.base.rglob("*")
                      if self.root not in p.parents and p != self.root and self.outside not in p.parents
                      and p != self.outside)

    def close(self):
        self.store.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module")
def project():
    p = Project()
    yield p
    p.close()


def _import_or_clear_error(store: Store, path: Path, dataset: str, **kw):
    """Either a version, or a WorkbenchError whose message is one readable line."""
    try:
        return import_file(store, path, dataset, **kw)
    except ImportRejected as exc:
        assert exc.result.errors, "a rejected import must say which rows were bad"
        for err in exc.result.errors:
            assert err["line"] is not None and err["error"]
        return None
    except WorkbenchError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message
        return None


@SETTINGS
@given(data=st.binary(min_size=0, max_size=2000), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv",
                                                                          ".parquet"]))
def test_random_bytes_get_a_clear_error_or_import(project, data, suffix):
    path = project.outside / f"random{suffix}"
    path.write_bytes(data)
    _import_or_clear_error(project.store, path, "random", on_error="skip")
    assert project.files_outside() == []


@SETTINGS
@given(depth=st.integers(min_value=1, max_value=5000), where=st.sampled_from(["prompt", "extra", "messages"]))
def test_deeply_nested_json(project, depth, where):
    nested = "[" * depth + "]" * depth
    if where == "prompt":
        line = '{"prompt": ' + nested + ', "completion": "ok"}'
    elif where == "extra":
        line = '{"prompt": "p", "completion": "c", "meta": ' + nested + '}'
    else:
        line = '{"messages": ' + nested + '}'
    path = project.outside / "nested.jsonl"
    path.write_text('{"prompt": "fine", "completion": "row"}\n' + line + "\n")
    _import_or_clear_error(project.store, path, "nested", on_error="fail")


WRONG_VALUES = st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                         st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                             max_size=3))


@SETTINGS
@given(prompt=WRONG_VALUES | text, completion=WRONG_VALUES | text, role=st.text(max_size=12) | WRONG_VALUES)
def test_wrong_types_in_each_format(project, prompt, completion, role):
    rows = [
        {"prompt": prompt, "completion": completion},
        {"messages": [{"role": role, "content": prompt}, {"role": "assistant", "content": completion}]},
        {"instruction": prompt, "output": completion},
        {"messages": prompt},
    ]
    for i, row in enumerate(rows):
        path = project.outside / f"wrong{i}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        _import_or_clear_error(project.store, path, f"wrong{i}", on_error="fail")
    assert project.files_outside() == []


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _roundtrip_rows(values: list[str]) -> list[dict]:
    return [{"prompt": v, "completion": values[-i - 1], "category": values[i // 2]} for i, v in enumerate(values)]


@SETTINGS
@given(values=st.lists(text, min_size=1, max_size=8))
def test_hostile_text_roundtrips_through_every_export(project, values):
    values = [v for v in values if v.strip()]  # an empty completion is rejected by design
    assume(values)
    rows = _roundtrip_rows(values)
    src = project.outside / "hostile.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    version = import_file(project.store, src, "hostile", on_error="fail").version
    stored = [r for batch in iter_version(project.store, version) for r in batch.to_pylist()]
    # The import makes CRLF and lone CR line endings LF in the text a model learns from; other columns stay as is.
    rows = [{**r, "prompt": _lf(r["prompt"]), "completion": _lf(r["completion"])} for r in rows]
    assert [(r["prompt"], r["completion"], r["category"]) for r in stored] == \
        [(r["prompt"], r["completion"], r["category"]) for r in rows]

    formats = ["prompt-completion", "parquet", "hf"]
    if not any("\x00" in v or "\r" in v for v in values):  # a CSV cell cannot carry NUL; CR is a line end
        formats.append("csv")
    for fmt in formats:
        out = project.outside / f"export-{fmt}" / ("ds" if fmt == "hf" else f"data.{fmt}")
        out.parent.mkdir(exist_ok=True)
        export_version(project.store, version, fmt, out)
        again = import_file(project.store, out, f"again-{fmt.replace('-', '_')}", on_error="fail").version
        back = [r for batch in iter_version(project.store, again) for r in batch.to_pylist()]
        assert [(r["prompt"], r["completion"], r["category"]) for r in back] == \
            [(r["prompt"], r["completion"], r["category"]) for r in rows], fmt
    assert project.files_outside() == []


@SETTINGS
@given(name=st.text(max_size=40))
def test_names_cannot_escape_the_project(project, name):
    # A dataset name is either refused or something that stays a plain name.
    try:
        checked = check_name(name)
    except WorkbenchError:
        checked = None
    if checked is not None:
        assert "/" not in checked and "\\" not in checked and checked not in (".", "..")
    # An uploaded file always lands inside the project's uploads folder.
    try:
        path = save_upload(project.store.project, name, b"x")
    except WorkbenchError:
        return
    assert project.store.project.uploads_dir.resolve() in path.resolve().parents
    assert "/" not in safe_filename(name)
    assert project.files_outside() == []


# ------------------------------------------------------------------ SQL console

SQL_WORDS = ["SELECT", "FROM", "WHERE", "COPY", "ATTACH", "INSTALL", "LOAD", "PRAGMA", "SET", "CALL",
             "read_csv('/etc/passwd')", "read_text('x')", "'/etc/passwd'", "glob('*')", "INSERT INTO",
             "DELETE", "UPDATE", "DROP TABLE", "CREATE TABLE x AS", "wb_versions", "wb_datasets",
             "hostile", "*", ";", "(", ")", "1", "'a'", "--", "/*", "*/", "EXPORT DATABASE", "getenv('HOME')",
             "VACUUM", "CHECKPOINT", "BEGIN", "COMMIT", "ROLLBACK", "WITH t AS (SELECT 1)", "UNION ALL",
             "query('SELECT 1')", "query_table('wb_versions')", "sniff_csv('x')", "duckdb_settings()",
             # functions that plan SQL text given as a string, and system views with settings and paths
             "json_serialize_plan('SELECT * FROM ''/etc/passwd''')", "json_serialize_plan('FROM read_text(''x'')')",
             "json_execute_serialized_sql(json_serialize_sql('SELECT * FROM read_text(''/etc/passwd'')'))",
             "pg_settings", "duckdb_databases", "information_schema.columns", "sqlite_master", "current_setting('x')"]


@SETTINGS
@given(words=st.lists(st.sampled_from(SQL_WORDS), min_size=1, max_size=10),
       noise=st.text(max_size=20))
def test_sql_console_never_writes_or_reads_files(project, words, noise):
    store = project.store
    cur = store.cursor()
    before = cur.execute("SELECT count(*), max(version_id) FROM wb_versions").fetchall()
    tables = cur.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    for sql in (" ".join(words), " ".join(words) + noise):
        try:
            result = run_readonly(cur, sql, max_rows=10, timeout_s=5)
        except WorkbenchError as exc:
            assert str(exc) and "Traceback" not in str(exc)
            continue
        assert isinstance(result, pa.Table)
        flat = json.dumps(result.to_pylist(), default=str)
        assert "root:" not in flat  # nothing of /etc/passwd
    assert cur.execute("SELECT count(*), max(version_id) FROM wb_versions").fetchall() == before
    assert cur.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == tables
    assert project.files_outside() == []


# ---------------------------------------------------------------- data shown in the app renders as text

MARKDOWN_ATTACKS = [
    "a ``` ![x](http://evil.example/i.png)",  # a fence that is no fence: the image used to render
    "`unbalanced ![x](http://evil.example/i.png)", "``a` ![x](http://evil.example/i.png)``",
    "[click](http://evil.example/)", "<http://evil.example/>", "<img src=http://evil.example/i.png>",
    "![x][r]\n\n[r]: http://evil.example/i.png", "&lt;b&gt; &amp; &#60;", "$x^2$ :red[alarm] :material/home:",
    "# heading\n- item\n1. one\n> quote\n    indented", "**bold** _it_ ~~gone~~ | a | b |", "back\\slash \\[x\\]",
]


def _markdown_wb_ui():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pages"))
    import wb_ui

    return wb_ui


@pytest.mark.parametrize("attack", MARKDOWN_ATTACKS)
def test_data_in_markdown_renders_as_its_own_characters(attack):
    """A CommonMark reference renderer (markdown-it-py) turns the escaped text into the original
    characters and nothing else: no image, link, tag, code span or heading."""
    import html
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(
        _markdown_wb_ui().safe_markdown(attack))
    tags = set(re.findall(r"<(/?\w+)", rendered))
    assert tags <= {"p", "/p", "br"}, rendered
    text = html.unescape(re.sub(r"<br />\n|</?p>", lambda m: "\n" if m.group().startswith("<br") else "", rendered))
    expected = re.sub(r"\n\n+", "\n", attack)  # blank lines become paragraph breaks
    assert text.strip("\n").replace("\u00a0", " ") == expected, rendered  # indents as no-break spaces


# ------------------------------------------------------------------ sizes an attacker picks

def _cli(*args, timeout=300):
    """The real command in a fresh interpreter: a segfault shows as exit -11/139, not a dead test run."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.parametrize("name, body", [
    # 10,000 levels in a 200 KB line: pyarrow's JSON reader overflowed its stack (exit 139)
    ("deep.jsonl", '{"prompt": "ok", "completion": "ok"}\n{"prompt": "p", "completion": "c", "meta": '
     + "[" * 100_000 + "]" * 100_000 + "}\n"),
    ("objects.jsonl", '{"prompt": "p", "completion": "c", "meta": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000
     + "}\n"),
    # one .json document 100,000 levels deep: json.load recursed (`internal error: RecursionError`)
    ("deep.json", "[" + '{"prompt": "p", "completion": "c", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}]"),
    ("first-line.json", '{"prompt": "p", "completion": "c", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"),
])
def test_deep_nesting_is_a_one_line_user_error(tmp_path, name, body):
    (tmp_path / name).write_text(body)
    proc = _cli("import", str(tmp_path / name), "--dataset", "deep", "--project", str(tmp_path / "p"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-500:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nested more than 32 levels deep" in errors[0], proc.stderr[-500:]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_10000_column_file_imports_in_linear_time(tmp_path):
    """4,000 keys took 16.5 s and 10,000 keys 125 s (quadratic in columns). A generous bound, in a slow
    test: linear work takes a few seconds."""
    import time

    keys = [f"key_{j}" for j in range(10_000)]
    path = tmp_path / "wide.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "c", **{k: i for k in keys}}) + "\n"
                            for i in range(20)))
    with Store.open(tmp_path / "p") as store:
        start = time.perf_counter()
        version = import_file(store, path, "wide").version
        seconds = time.perf_counter() - start
    assert version.row_count == 20 and seconds < 60, seconds


def test_a_huge_sql_result_is_refused_not_printed(tmp_path):
    """10 rows of 200 MB strings took the CLI to 8 GB of memory and ended in an uncaught OSError."""
    code = ("import resource, sys\n"
            "from workbench.cli.main import main\n"
            "rc = main(['sql', \"SELECT repeat('x', 200000000) AS s FROM range(10)\", '--project', sys.argv[1]])\n"
            "print('peak_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-500:]
    assert "the result is larger than" in proc.stderr and proc.stderr.count("\n") == 1
    peak = int(proc.stdout.split("peak_mb")[1])
    assert peak < 4096, peak


MARKDOWN_CHARS = list("`*_[]()!<>#:$~|\\/.@=&;\"' -\n\t") + ["http", "www", "img", "src", "a", "![", "](", "```"]


@SETTINGS
@given(st.lists(st.sampled_from(MARKDOWN_CHARS), max_size=60).map("".join))
def test_no_text_from_data_turns_into_markup(attack):
    """Whatever mix of markdown syntax the data holds, the escaped text renders to paragraphs and
    line breaks only: no element that could fetch a URL or run anything."""
    import re

    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(
        _markdown_wb_ui().safe_markdown(attack))
    assert set(re.findall(r"<(/?\w+)", rendered)) <= {"p", "/p", "br"}, (attack, rendered)
