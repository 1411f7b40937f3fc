"""`workbench datasets --rename/--archive/--unarchive/--archived/--all`: one JSON object each, one-line errors,
and the plain `workbench datasets` output and keys unchanged."""

import json

from tests.conftest import write_jsonl
from workbench.cli.main import main

RECORDS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(6)]
LISTED_KEYS = {"name", "version", "versions", "records", "format", "content_hash", "kind", "created_at"}


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_rename_archive_unarchive_from_the_command_line(capsys, tmp_path):
    proj = str(tmp_path / "p")
    data = write_jsonl(tmp_path / "t.jsonl", RECORDS)
    first = run_json(capsys, "import", str(data), "--dataset", "tix", "--project", proj)
    run_json(capsys, "import", str(data), "--dataset", "tix", "--project", proj)
    run_json(capsys, "import", str(data), "--dataset", "other", "--project", proj)

    out = run_json(capsys, "datasets", "--rename", "tix", "tickets", "--project", proj)
    assert out["dataset"] == "tickets" and out["renamed_from"] == "tix" and out["versions"] == 2
    code, text, _ = run(capsys, "datasets", "--rename", "tickets", "tix2", "--project", proj)
    assert code == 0 and text.startswith("renamed tickets to tix2 (2 versions)")
    run_json(capsys, "datasets", "--rename", "tix2", "tickets", "--project", proj)
    stats = run_json(capsys, "sql", 'SELECT count(*) AS n FROM "tickets@1"', "--project", proj)
    assert stats["rows"] == [{"n": 6}]

    listed = run_json(capsys, "datasets", "--project", proj)["datasets"]
    assert [d["name"] for d in listed] == ["other", "tickets"] and all(set(d) == LISTED_KEYS for d in listed)
    assert listed[1]["content_hash"] == first["content_hash"]

    out = run_json(capsys, "datasets", "--archive", "tickets", "--project", proj)
    assert out["dataset"] == "tickets" and out["archived"] is True and out["archived_at"]
    assert [d["name"] for d in run_json(capsys, "datasets", "--project", proj)["datasets"]] == ["other"]
    archived = run_json(capsys, "datasets", "--archived", "--project", proj)["datasets"]
    assert [(d["name"], d["archived_at"]) for d in archived] == [("tickets", out["archived_at"])]
    everything = run_json(capsys, "datasets", "--all", "--versions", "--project", proj)["datasets"]
    assert [(d["name"], bool(d["archived_at"]), len(d["all_versions"])) for d in everything] == [
        ("other", False, 1), ("tickets", True, 2)]
    code, text, _ = run(capsys, "datasets", "--all", "--project", proj)
    assert code == 0 and [ln.split()[0] for ln in text.splitlines()[1:]] == ["other", "tickets"]
    assert "(archived" in text.splitlines()[2] and "(archived" not in text.splitlines()[1]
    assert run_json(capsys, "export", "tickets@2", "--format", "csv", "--out", str(tmp_path / "t.csv"),
                    "--project", proj)["records"] == 6  # still readable by explicit ref

    assert run_json(capsys, "datasets", "--unarchive", "tickets", "--project", proj) == {
        "dataset": "tickets", "archived": False, "versions": 2}
    assert run_json(capsys, "datasets", "--archived", "--project", proj)["datasets"] == []
    code, text, _ = run(capsys, "datasets", "--archived", "--project", proj)
    assert code == 0 and text.strip() == "no archived datasets"


def test_errors_are_one_line(capsys, tmp_path):
    proj = str(tmp_path / "p")
    data = write_jsonl(tmp_path / "t.jsonl", RECORDS)
    for name in ("a", "b"):
        run_json(capsys, "import", str(data), "--dataset", name, "--project", proj)
    for args, message in [
        (("--rename", "a", "b"), "error: a dataset named 'b' exists already; choose another name"),
        (("--rename", "a", "no good"), "error: dataset name 'no good' is not allowed"),
        (("--rename", "zz", "c"), "error: no dataset named 'zz'; datasets here: a, b"),
        (("--archive", "zz"), "error: no dataset named 'zz'"),
        (("--unarchive", "a"), "error: dataset 'a' is not archived"),
    ]:
        code, out, err = run(capsys, "datasets", *args, "--project", proj)
        assert code == 1 and out == "" and err.startswith(message) and err.count("\n") == 1, (args, err)
    run(capsys, "datasets", "--rename", "a", "c", "--project", proj)
    code, _, err = run(capsys, "stats", "a", "--project", proj)
    assert code == 1 and err == "error: no dataset named 'a': it was renamed to 'c'\n"
