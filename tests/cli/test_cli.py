"""The command-line contract of DESIGN.md: commands, flags, --json keys, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_jsonl
from workbench.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_import_stats_datasets_sql_export(capsys, tmp_path, banking_dir):
    proj = str(tmp_path / "p")
    assert run_json(capsys, "init", "--project", proj)["project"] == proj
    got = run_json(capsys, "import", str(banking_dir / "train.csv"), "--dataset", "banking", "--project", proj)
    assert got["imported"] == got["records"] == 10003 and got["skipped"] == 0 and got["errors"] == []
    stats = run_json(capsys, "stats", "banking", "--project", proj)
    assert stats["records"] == 10003 and len(stats["by_category"]) == 77
    assert sum(stats["by_category"].values()) == 10003
    listed = run_json(capsys, "datasets", "--project", proj)["datasets"]
    assert [(d["name"], d["records"], d["version"]) for d in listed] == [("banking", 10003, 1)]
    sql = run_json(capsys, "sql", "SELECT count(DISTINCT category) AS n FROM banking", "--project", proj)
    assert sql["rows"] == [{"n": 77}]
    out = run_json(capsys, "export", "banking@1", "--format", "parquet", "--out", str(tmp_path / "b.parquet"),
                   "--project", proj)
    assert out["records"] == 10003
    again = run_json(capsys, "import", out["path"], "--dataset", "banking", "--project", proj)
    assert again["version"] == 2 and again["content_hash"] == got["content_hash"]
    code, plain, _ = run(capsys, "datasets", "--project", proj)
    code, versions, _ = run(capsys, "datasets", "--versions", "--project", proj)
    assert "@1" not in plain and versions.startswith(plain.rstrip("\n"))  # --versions adds every version
    lines = versions.splitlines()[2:]
    assert [ln.split()[0] for ln in lines] == ["@2", "@1"] and got["content_hash"][:12] in lines[1]


def test_errors_are_one_line_and_exit_non_zero(capsys, tmp_path):
    proj = str(tmp_path / "p")
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "a", "completion": "b"}', '{"prompt": "x"'])
    code, out, err = run(capsys, "import", str(bad), "--dataset", "d", "--project", proj, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["imported"] == 0 and report["errors"][0]["line"] == 2
    assert err.strip().startswith("error: 1 bad row") and err.count("\n") == 1
    code, out, err = run(capsys, "sql", "DROP TABLE wb_versions", "--project", proj)
    assert code == 1 and "only SELECT" in err and err.count("\n") == 1
    code, _, err = run(capsys, "stats", "nope", "--project", proj)
    assert code == 1 and "no dataset named 'nope'" in err
    code, _, err = run(capsys, "import", str(bad), "--dataset", "d", "--on-error", "skip", "--project", proj)
    assert code == 0
    q = run_json(capsys, "quarantine", "d", "--project", proj)
    assert q["count"] == 1 and q["rows"][0]["line"] == 2


@pytest.mark.slow
def test_real_process_prints_no_traceback(tmp_path):
    """A fresh interpreter, as a user runs it: a bad file gives one line on stderr and exit 1."""
    proj = tmp_path / "p"
    cases = {"empty.jsonl": b"", "latin1.jsonl": b'{"prompt": "caf\xe9", "completion": "x"}\n',
             "huge.jsonl": json.dumps({"prompt": "p", "completion": "x" * 10_000_000}).encode() + b"\n"}
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "workbench", "import", str(tmp_path / name), "--dataset", "x",
                               "--project", str(proj)], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_demo_project(capsys, tmp_path):
    info = run_json(capsys, "demo", "--no-serve", "--records", "500", "--project", str(tmp_path / "d"))
    assert info["records"] == 500 and info["dataset"] == "support-tickets"
    stats = run_json(capsys, "stats", "support-tickets", "--project", str(tmp_path / "d"))
    assert len(stats["by_category"]) >= 8
    # a second run keeps the existing import
    assert run_json(capsys, "demo", "--no-serve", "--records", "500", "--project", str(tmp_path / "d"))["version"] == 1


def _leaves(parser, path=()):
    """Every runnable command of the parser tree, as (path, leaf parser)."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, path + (name,))


def _required_args(parser):
    """Placeholder values for the leaf's required positionals and options."""
    out = []
    for action in parser._actions:
        value = str((action.choices and list(action.choices)[0]) or (1 if action.type in (int, float) else "x"))
        if not action.option_strings and action.nargs not in ("?", "*") and action.dest != "help":
            out.append(value)
        elif action.option_strings and action.required:
            out += [action.option_strings[0], value]
    return out


def test_project_option_before_or_after_every_command():
    """`workbench --project A CMD` used ./workbench-data: the subparser's default overwrote A."""
    from workbench.cli.main import build_parser

    parser = build_parser()
    leaves = list(_leaves(parser))
    assert {("users", "add"), ("annotations", "import"), ("review", "create"), ("questions", "add"),
            ("init",), ("sql",)} <= {path for path, _ in leaves}
    for path, leaf in leaves:
        rest = [*path, *_required_args(leaf)]
        assert parser.parse_args(["--project", "A", *rest]).project == "A", path
        assert parser.parse_args([*rest, "--project", "B"]).project == "B", path
        assert parser.parse_args(rest).project is None, path
        assert parser.parse_args(["--debug", *rest]).debug is True, path
        assert parser.parse_args(rest).debug is False, path
        if len(path) == 2:  # between the command and its action
            assert parser.parse_args([path[0], "--project", "C", *rest[1:]]).project == "C", path


def test_project_before_command_creates_that_project(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "--project", str(tmp_path / "chosen"), "init", "--json")
    assert code == 0, err
    assert json.loads(out)["project"] == str(tmp_path / "chosen")
    assert (tmp_path / "chosen").is_dir() and not (tmp_path / "workbench-data").exists()


ESC_DATA = "x\x1b]52;c;cHduZWQ=\x07\x1b[2J\r\x9b31m\x00y"


def test_control_characters_from_data_are_escaped(capsys, tmp_path):
    """ESC/OSC sequences, CR and C1 controls in data must not reach the terminal raw."""
    proj = str(tmp_path / "p")
    bad = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"prompt": "a", "completion": "b"}),
                                               json.dumps({ESC_DATA: 1})])
    code, out, err = run(capsys, "import", str(bad), "--dataset", "d", "--project", proj)
    assert code == 1 and "\x1b" not in err and "\r" not in err and "\x9b" not in err, repr(err)
    good = write_jsonl(tmp_path / "good.jsonl", [json.dumps({"prompt": ESC_DATA, "completion": "tab\tnew"})])
    assert run(capsys, "import", str(good), "--dataset", "g", "--project", proj)[0] == 0
    code, out, err = run(capsys, "sql", "SELECT prompt, 'a\nb' AS nl, 'c' || chr(13) || 'd' AS cr FROM g", "--project",
                         proj)  # a CR from the query itself: the import has made the data's CR a line feed
    assert code == 0 and "\\u001b]52" in out and "\\u009b" in out and "\\u0000" in out
    assert not any(c in out for c in "\x1b\x07\r\x9b\x00"), repr(out)
    code, out, err = run(capsys, "sql", "SELECT prompt FROM g", "--project", proj, "--json")
    assert not any(c in out for c in "\x1b\x07\r\x9b\x00")
    # JSON keeps the exact stored value (the import made the lone CR a line feed: line endings are normalised)
    assert json.loads(out)["rows"] == [{"prompt": ESC_DATA.replace("\r", "\n")}]
    code, out, err = run(capsys, "sql", "SELECT * FROM \"\x1b[31mred\"", "--project", proj)
    assert code == 1 and "\x1b" not in err and "\\u001b[31mred" in err


@pytest.mark.slow
def test_model_commands_print_only_our_own_lines(tmp_path):
    """`workbench chat` in a fresh interpreter: no library progress bars ('Loading weights: 100%|...') and no
    transformers FutureWarnings between the answer and the prompt (issue 22's noise)."""
    from trainers import tiny
    from trainers.config import TrainConfig

    folder = tmp_path / "model"
    tok = tiny.train_tokenizer(["where is my order", "your refund is on its way"] * 20, 300)
    tiny.random_model(TrainConfig(), tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "PYTHONWARNINGS"))}
    proc = subprocess.run([sys.executable, "-m", "workbench", "chat", "--base-model", str(folder), "--prompt",
                           "where is my order", "--max-new-tokens", "4", "--json", "--project", str(tmp_path / "p")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["new_tokens"] <= 4
    assert "it/s]" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-1000:]
