"""Preference data through the command line: `import --format preference|kto`, `export --format preference|kto`,
and `train --method dpo|kto` (pre-flight), with the choices the CLI offers equal to the library's own lists."""

import json

import pytest

from tests.cli.test_cli import run, run_json
from tests.conftest import write_jsonl
from tests.data.test_preference_formats import PAIRS, UNPAIRED
from trainers.config import METHODS
from workbench.cli import main as cli
from workbench.cli.main import main
from workbench.core.formats import FORMATS
from workbench.data.export import EXPORT_FORMATS


def test_the_cli_offers_every_format_and_method_the_library_has():
    assert cli.IMPORT_FORMATS == FORMATS and set(cli.EXPORT_FORMATS) == set(EXPORT_FORMATS)
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command" or getattr(a, "choices", None) and "train" in a.choices)
    train = sub.choices["train"]
    assert next(a for a in train._actions if a.dest == "method").choices == list(METHODS)


def test_pairs_import_export_and_a_dpo_preflight(capsys, tmp_path):
    proj = str(tmp_path / "p")
    got = run_json(capsys, "import", str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 4)), "--dataset", "pairs",
                   "--format", "preference", "--project", proj)
    assert got["records"] == 12
    out = run_json(capsys, "export", "pairs", "--format", "preference", "--out", str(tmp_path / "o.jsonl"),
                   "--project", proj)
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert out["records"] == len(rows) == 12 and {"prompt", "chosen", "rejected"} <= set(rows[0])
    code, _, err = run(capsys, "export", "pairs", "--format", "kto", "--out", str(tmp_path / "k.jsonl"),
                       "--project", proj)
    assert code != 0 and "Traceback" not in err and "export it as" in err
    pre = run_json(capsys, "train", "--dataset", "pairs", "--method", "dpo", "--preflight", "--max-steps", "5",
                   "--project", proj)
    assert pre["method"] == "dpo" and pre["train_records"] + pre["val_records"] == 12 and pre["planned_steps"] == 5
    assert "Order ORD-1234 ships today." in pre["example_text"] or "unblocked" in pre["example_text"] \
        or "refund" in pre["example_text"]  # the chosen answer of the pair shown
    assert [s["trained"] for s in pre["example"]] == [False, True, False, True]  # prompt, chosen, -, rejected
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "pairs", "--method", "dpo-ish", "--project", proj])
    assert "invalid choice" in capsys.readouterr().err
    code, _, err = run(capsys, "train", "--dataset", "pairs", "--method", "kto", "--preflight", "--project", proj)
    assert code == 1 and "Traceback" not in err and "prompt, completion, label" in err  # pairs are not kto


def test_unpaired_examples_import_as_kto_from_the_cli(capsys, tmp_path):
    proj = str(tmp_path / "p")
    got = run_json(capsys, "import", str(write_jsonl(tmp_path / "kto.jsonl", UNPAIRED)), "--dataset", "kto",
                   "--format", "kto", "--project", proj)
    assert got["records"] == 3
    pre = run_json(capsys, "train", "--dataset", "kto", "--method", "kto", "--preflight", "--set", "val_fraction=0.34",
                   "--project", proj)
    assert pre["method"] == "kto" and [s["trained"] for s in pre["example"]] == [False, True]
