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
