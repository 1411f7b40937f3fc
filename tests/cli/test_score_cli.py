"""`workbench score`: two text files in, sacreBLEU/rouge-score numbers out, clear errors."""

import json

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from workbench.cli.main import main
from workbench.data.demo import generate_tickets

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def _write(path, lines, end="\n"):
    path.write_text("".join(x + end for x in lines), encoding="utf-8")
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    refs = [t["completion"].replace("\n", " ") for t in generate_tickets(40, seed=3)]
    preds = [" ".join(w for i, w in enumerate(r.split()) if i % 7 != 3) for r in refs]
    preds[0] = refs[0]
    return preds, refs, _write(tmp_path / "pred.txt", preds), _write(tmp_path / "ref.txt", refs)


def test_json_scores_equal_reference_libraries(files, capsys):
    preds, refs, p, r = files
    code, out, err = _run(capsys, "score", "--predictions", str(p), "--references", str(r), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 40
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-8)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-8)
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    scores = [scorer.score(b, a) for a, b in zip(preds, refs)]
    for t in TYPES:
        assert result[t] == pytest.approx(np.mean([s[t].fmeasure for s in scores]), abs=1e-12)
        assert 0 <= result[t] <= 1
    assert result["exact_match"] == pytest.approx(1 / 40)
    assert result["length_ratio"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).ratio)


def test_text_output_and_metric_choice(files, capsys):
    _, _, p, r = files
    code, out, _ = _run(capsys, "score", "--predictions", str(p), "--references", str(r), "--metrics", "bleu")
    assert code == 0 and out.startswith("40 items\nBLEU") and "ROUGE" not in out
    code, out, _ = _run(capsys, "score", "--predictions", str(p), "--references", str(r), "--metrics", "rouge,chrf",
                        "--json")
    result = json.loads(out)
    assert "bleu" not in result and {"rouge1", "rougeLsum", "chrf"} <= result.keys()


def test_line_count_mismatch_names_both_counts(tmp_path, capsys):
    p = _write(tmp_path / "p.txt", ["a", "b", "c"])
    r = _write(tmp_path / "r.txt", ["a", "b"])
    code, out, err = _run(capsys, "score", "--predictions", str(p), "--references", str(r), "--json")
    assert code == 1 and out == ""
    assert err.startswith("error: the predictions file") and "has 3 lines" in err and "has 2;" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["--metrics", "bleu,blue"], "--metrics: unknown metric blue"),
    (["--predictions", "missing.txt"], "predictions file missing.txt not found"),
])
def test_user_errors(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "p.txt", ["a"])
    _write(tmp_path / "r.txt", ["a"])
    base = {"--predictions": "p.txt", "--references": "r.txt"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    code, _, err = _run(capsys, "score", *[x for kv in base.items() for x in kv])
    assert code == 1 and message in err


def test_crlf_trailing_newline_empty_lines_and_jsonl(tmp_path, capsys):
    p = _write(tmp_path / "p.txt", ["the cat", "", "a dog"], end="\r\n")
    r = _write(tmp_path / "r.txt", ["the cat", "", "a dog"])
    code, out, _ = _run(capsys, "score", "--predictions", str(p), "--references", str(r), "--json")
    result = json.loads(out)
    assert result["n"] == 3 and result["exact_match"] == 1.0
    # .jsonl items may hold newlines: ROUGE-Lsum sees sentences
    preds = ["one two three\nfour five six", "x"]
    refs = ["four five six\none two three", "x"]
    pj = _write(tmp_path / "p.jsonl", [json.dumps(x) for x in preds])
    rj = _write(tmp_path / "r.jsonl", [json.dumps(x) for x in refs])
    code, out, _ = _run(capsys, "score", "--predictions", str(pj), "--references", str(rj), "--json",
                        "--metrics", "rouge")
    result = json.loads(out)
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    assert result["rougeLsum"] == pytest.approx(np.mean([scorer.score(b, a)["rougeLsum"].fmeasure
                                                         for a, b in zip(preds, refs)]))
    assert result["rougeLsum"] > result["rougeL"]
    bad = _write(tmp_path / "bad.jsonl", ['"ok"', "{not json"])
    code, _, err = _run(capsys, "score", "--predictions", str(bad), "--references", str(rj))
    assert code == 1 and "line 2: not JSON" in err


def test_empty_files_are_an_error(tmp_path, capsys):
    p = _write(tmp_path / "p.txt", [])
    code, _, err = _run(capsys, "score", "--predictions", str(p), "--references", str(p))
    assert code == 1 and "no items" in err
