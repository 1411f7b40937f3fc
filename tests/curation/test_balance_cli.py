"""`workbench balance`, `split`, `leakage` and `drift` on the command line: JSON keys, exit codes, one-line errors."""

import json

import pytest

from tests.conftest import BANKING
from workbench.cli.main import main


@pytest.fixture
def project(tmp_path, capsys):
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    root = str(tmp_path / "p")
    assert main(["import", str(BANKING / "train.csv"), "--dataset", "banking", "--project", root, "--json"]) == 0
    assert main(["import", str(BANKING / "test.csv"), "--dataset", "fresh", "--project", root, "--json"]) == 0
    capsys.readouterr()
    return root


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_balance_preview_then_commit(project, capsys):
    code, out, _ = run(capsys, "balance", "banking", "--by", "category", "--target", "uniform", "--size", "3850",
                       "--strategy", "hybrid", "--seed", "2", "--preview", "--json", "--project", project)
    preview = json.loads(out)
    assert code == 0 and preview["preview"] and preview["records"] == 3850 and preview["exact"]
    assert set(preview["counts"].values()) == {50} and len(preview["counts"]) == 77
    code, out, _ = run(capsys, "datasets", "--json", "--project", project)
    assert [d["name"] for d in json.loads(out)["datasets"]] == ["banking", "fresh"]  # preview wrote nothing

    hashes = []
    for _ in range(2):
        code, out, _ = run(capsys, "balance", "banking", "--by", "category", "--target", "uniform", "--size", "3850",
                           "--strategy", "hybrid", "--seed", "2", "--out", "bal", "--json", "--project", project)
        report = json.loads(out)
        assert code == 0 and report["records"] == 3850 and report["counts"]["contactless_not_working"] == 50
        hashes.append(report["content_hash"])
    assert hashes[0] == hashes[1] and report["version"] == 2


def test_balance_errors_are_one_line(project, capsys):
    code, out, err = run(capsys, "balance", "banking", "--target", "uniform", "--size", "3850", "--out", "x",
                         "--project", project)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "contactless_not_working has 35 records; target 50 needs upsampling" in err
    code, _, err = run(capsys, "balance", "banking", "--target", "uniform", "--size", "10", "--project", project)
    assert code == 1 and "--out NEWNAME" in err
    code, _, err = run(capsys, "balance", "banking", "--target", "A=0.5,B=0.4", "--size", "10", "--out", "x",
                       "--project", project)
    assert code == 1 and "add up to 0.9" in err
    code, out, err = run(capsys, "balance", "banking", "--target", "uniform", "--size", "3850", "--out", "short",
                         "--allow-short", "--json", "--project", project)
    report = json.loads(out)
    assert code == 0 and report["records"] == 3850 - 24 and len(report["shortfalls"]) == 2


def test_balance_with_reference_and_file(project, capsys, tmp_path):
    target = tmp_path / "target.csv"
    target.write_text("category,share\ncard_arrival,0.6\nage_limit,0.4\n")
    code, out, _ = run(capsys, "balance", "banking", "--target", str(target), "--size", "100", "--out", "two",
                       "--json", "--project", project)
    assert code == 0 and json.loads(out)["counts"] == {"card_arrival": 60, "age_limit": 40}
    code, out, _ = run(capsys, "balance", "banking", "--target", "proportional", "--reference", "fresh",
                       "--size", "770", "--strategy", "hybrid", "--min", "5", "--out", "like-fresh", "--json",
                       "--project", project)
    assert code == 0 and set(json.loads(out)["counts"].values()) == {10}  # banking77 test: 40 per category


def test_split_leakage_export_and_drift(project, capsys, tmp_path):
    code, out, _ = run(capsys, "split", "banking", "--ratios", "0.8,0.1,0.1", "--stratify", "category", "--seed",
                       "1", "--json", "--project", project)
    report = json.loads(out)
    assert code == 0 and report["records"] == 10003 and sum(report["counts"].values()) == 10003
    assert report["leakage"]["clean"] and report["version"] == 2
    code, out, _ = run(capsys, "leakage", "banking", "--json", "--project", project)
    assert code == 0 and json.loads(out)["exact_groups_across_splits"] == 0
    path = tmp_path / "train.jsonl"
    code, out, _ = run(capsys, "export", "banking", "--format", "csv", "--split", "train", "--out", str(path),
                       "--json", "--project", project)
    assert code == 0 and json.loads(out)["records"] == report["counts"]["train"]
    code, out, _ = run(capsys, "drift", "banking@1", "fresh", "--json", "--project", project)
    result = json.loads(out)
    assert code == 0 and result["mix"]["dof"] == 76 and result["summary"]
    code, out, _ = run(capsys, "drift", "banking@1", "fresh", "--project", project)
    assert "differs from banking@1" in out
    code, _, err = run(capsys, "split", "banking", "--ratios", "0.8,0.3", "--project", project)
    assert code == 1 and "add up to 1.1" in err
