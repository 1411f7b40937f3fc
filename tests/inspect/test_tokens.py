"""Token lengths: tokenizer loading, the fast chat-template renderer, exact and approximate counts,
truncation figures and the `workbench tokens` / `stats` commands, checked against the tokenizer
itself (apply_chat_template + offsets) and plain Python brute force."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.cli.main import main
from workbench.core.canonical import canonical_to_messages
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store
from workbench.core.versions import write_version
from workbench.data.demo import generate_tickets
from workbench.inspect import tokens

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# A Llama-3-like template: BOS once, contents trimmed (so the fast path must fall back for padded contents).
TRIMMING = ("{{ bos_token }}{% for message in messages %}<|start|>{{ message['role'] }}<|sep|>\n\n"
            "{{ message['content'] | trim }}<|eot|>{% endfor %}{% if add_generation_prompt %}<|start|>assistant"
            "<|sep|>\n\n{% endif %}")
ESCAPING = ("{% for message in messages %}{{ message['role'] }}: {{ message['content'] | tojson }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")


def build_tokenizer(folder: Path, template: str | None = CHATML, texts: list[str] | None = None) -> Path:
    """A byte-level BPE trained on a few hundred demo tickets, wrapped and saved like a real model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        tickets = list(generate_tickets(300, seed=3))
        texts = [t["prompt"] for t in tickets] + [t["completion"] for t in tickets]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "<|start|>", "<|sep|>", "<|eot|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<s>")
    if template:
        fast.chat_template = template
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "chatml")


@pytest.fixture
def counter(store, tok_dir):
    return tokens.load_tokenizer(store, str(tok_dir))


def brute_force(tokenizer, text: str, char_spans, add_special: bool):
    """(total, supervised, per-token labels) from the tokenizer's offsets, token by token: a token is
    supervised when its first character lies in an assistant span (never the first token)."""
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    labels = [i > 0 and any(a <= s < b for a, b in char_spans) for i, (s, _) in enumerate(enc["offset_mapping"])]
    return len(enc["input_ids"]), sum(labels), labels


def positions(spans, n):
    out = [False] * n
    for a, b in spans:
        for i in range(a, b):
            out[i] = True
    return out


RECORDS = [
    {"prompt": "Where is my parcel?", "completion": "It is on its way.", "system": None, "messages": None},
    {"prompt": "Hi", "completion": "Hello! How can I help?", "system": "You are kind.", "messages": None},
    {"prompt": "  padded prompt  ", "completion": "\nanswer with newline\n", "system": None, "messages": None},
    {"prompt": "last question", "completion": "last answer", "system": None, "messages": json.dumps([
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "last question"},
        {"role": "assistant", "content": "last answer"}])},
    {"prompt": "Classify me: card declined", "completion": None, "system": None, "messages": None},
    {"prompt": "Zoë paid €12 — ünïcödé ✓ 😀", "completion": "Refund of €12 sent ✓", "system": None, "messages": None},
]


# ---------------------------------------------------------------- loading

@pytest.mark.slow  # the first test to import transformers pays for it (seconds)
def test_load_tokenizer_folder_tiny_and_missing(store, tok_dir):
    assert tokens.load_tokenizer(store, None).approximate
    assert tokens.load_tokenizer(store, "approximate").approximate
    c = tokens.load_tokenizer(store, str(tok_dir))
    assert not c.approximate and c.tokenizer.is_fast and "chat template" in c.rule
    with pytest.raises(WorkbenchError, match="tiny base model is not built"):
        tokens.load_tokenizer(store, "tiny")
    shutil.copytree(tok_dir, store.project.models_dir / "tiny")
    tiny = tokens.load_tokenizer(store, "tiny")
    assert tiny.cache_tag.startswith("tiny-") and tiny.cache_tag.split("-")[1] == c.cache_tag.split("-")[1]
    assert "tiny" in tokens.tokenizer_choices(store)
    with pytest.raises(WorkbenchError, match="local Hugging Face cache"):
        tokens.load_tokenizer(store, "no-such-org/no-such-model-xyz")
    with pytest.raises(WorkbenchError, match="not a model folder"):
        tokens.load_tokenizer(store, str(tok_dir / "tokenizer.json"))


# ---------------------------------------------------------------- rendering

text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
shapes = st.sampled_from([("user", "assistant"), ("system", "user", "assistant"),
                          ("user", "assistant", "user", "assistant"), ("user",),
                          ("system", "user", "assistant", "user", "assistant", "user", "assistant")])


@pytest.mark.parametrize("template", [CHATML, TRIMMING, ESCAPING], ids=["chatml", "trimming", "escaping"])
def test_fast_renderer_equals_the_chat_template(tmp_path, template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path / "t", template, texts=["a b c"] * 20))
    renderer = tokens.ChatRenderer(tok)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(shape=shapes, contents=st.lists(text_st, min_size=7, max_size=7))
    def check(shape, contents):
        msgs = [{"role": r, "content": c} for r, c in zip(shape, contents)]
        # The reference: apply_chat_template called for every prefix (trainers.data.render does the same).
        full = tok.apply_chat_template(msgs, tokenize=False)
        expected = []
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                prefix = tok.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
                upto = full if i + 1 == len(msgs) else tok.apply_chat_template(msgs[: i + 1], tokenize=False)
                if not (upto.startswith(prefix) and full.startswith(upto)):
                    expected = None
                    break
                expected.append((len(prefix), len(upto)))
        if expected is None:
            with pytest.raises(WorkbenchError):
                renderer.render(msgs)
        else:
            assert renderer.render(msgs) == (full, expected)

    check()
    if template == CHATML:
        assert all(shape is not None and shape[0] == "any" for shape in renderer._shapes.values())


# ---------------------------------------------------------------- counting

@pytest.mark.parametrize("template", [CHATML, None], ids=["chat-template", "no-template"])
def test_counts_equal_token_by_token_brute_force(store, tmp_path, template):
    folder = build_tokenizer(tmp_path / "t", template)
    c = tokens.load_tokenizer(store, str(folder))
    tickets = list(generate_tickets(40, seed=5))
    records = RECORDS + [{"prompt": t["prompt"], "completion": t["completion"], "system": None, "messages": None}
                         for t in tickets]
    got = tokens.count_records(c, records)
    for r, (total, supervised, spans) in zip(records, got):
        msgs = canonical_to_messages(r["prompt"], r["completion"], r["system"], r["messages"])
        if template:
            text, char_spans = tokens.ChatRenderer(c.tokenizer).slow(msgs)
        else:
            text = "\n\n".join(m["content"] for m in msgs)
            char_spans, at = [], 0
            for m in msgs:
                if m["role"] == "assistant":
                    char_spans.append((at, at + len(m["content"])))
                at += len(m["content"]) + 2
        n, sup, labels = brute_force(c.tokenizer, text, char_spans, add_special=template is None)
        assert (total, supervised) == (n, sup), r["prompt"]
        assert positions(spans, total) == labels
    assert got[4][1] == 0 and got[4][2] == []  # classification: nothing supervised


def test_counts_agree_with_the_trainer_when_it_is_there(store, counter):
    data = pytest.importorskip("trainers.data")
    tickets = list(generate_tickets(60, seed=9))
    records = [{"messages": [{"role": "user", "content": t["prompt"]}, {"role": "assistant", "content": t["completion"]}]}
               for t in tickets]
    counts = tokens.count_records(counter, [{"prompt": t["prompt"], "completion": t["completion"]} for t in tickets])
    for max_len in (64, 128, 100_000):
        _, trainer = data.tokenize(counter.tokenizer, records, max_len)
        kept = [positions(c[2], c[0])[:max_len].count(True) for c in counts]
        assert trainer["tokens"] == sum(c[0] for c in counts)
        assert trainer["truncated"] == sum(c[0] > max_len for c in counts)
        assert trainer["supervised_tokens"] == sum(kept)
        assert trainer["dropped"] == kept.count(0)


def make_version(store, records, name="mixed"):
    cols = {k: pa.array([r.get(k) for r in records], pa.string()) for k in ("prompt", "completion", "system",
                                                                             "messages")}
    cols["category"] = pa.array([f"c{i % 3}" for i in range(len(records))])
    return write_version(store, name, [pa.table(cols)], kind="import", fmt="prompt-completion", recipe={})


def test_approximate_counts_equal_the_python_rule(store):
    version = make_version(store, RECORDS * 5)
    path = tokens.count_tokens(store, version)
    got = store.cursor().execute(f"SELECT * FROM read_parquet('{path}') ORDER BY _row").fetchall()
    assert [g[0] for g in got] == list(range(len(RECORDS) * 5))
    for (_row, p, c, total, spans), r in zip(got, RECORDS * 5):
        msgs = canonical_to_messages(r["prompt"], r["completion"], r["system"], r["messages"])
        n = [math.ceil(len(m["content"].encode("utf-8")) / 4) for m in msgs]
        exp_spans = [(sum(n[:i]), sum(n[: i + 1])) for i, m in enumerate(msgs) if m["role"] == "assistant"]
        assert total == sum(n) and [(s["start"], s["stop"]) for s in spans] == exp_spans
        assert c == sum(b - a for a, b in exp_spans) and p == total - c
        assert tokens.approx_tokens(r["prompt"]) == n[-2 if r["completion"] is not None else -1]


def test_summary_and_truncation_equal_brute_force(store, counter):
    tickets = list(generate_tickets(120, seed=2))
    records = RECORDS + [{"prompt": t["prompt"], "completion": t["completion"]} for t in tickets]
    version = make_version(store, records)
    counts = tokens.count_records(counter, [{**{"system": None, "messages": None}, **r} for r in records])
    for max_len in (16, 150, 10_000):
        s = tokens.token_summary(store, version, counter, max_length=max_len)
        assert s["records"] == len(records) and not s["approximate"]
        totals = np.array([c[0] for c in counts])
        sup = np.array([c[1] for c in counts])
        for key, values in (("total", totals), ("completion", sup), ("prompt", totals - sup)):
            assert s[key]["max"] == values.max() and s[key]["sum"] == values.sum()
            assert [s[key]["p50"], s[key]["p95"]] == list(np.quantile(values, [0.5, 0.95], method="inverted_cdf"))
        lost = sum(positions(c[2], c[0])[max_len:].count(True) for c in counts)
        t = s["truncation"]
        assert t["truncated_records"] == int((totals > max_len).sum())
        assert t["supervised_tokens_lost"] == lost and t["supervised_tokens"] == sup.sum()
        assert t["records_without_supervised_tokens"] == sum(
            1 for c in counts if c[1] and not any(positions(c[2], c[0])[:max_len]))
    path = tokens.count_tokens(store, version, counter)
    hist = tokens.token_histogram(store, path, "total_tokens", bins=10)
    assert sum(b["records"] for b in hist) == len(records)
    assert all(b["start"] <= v < b["stop"] for v in [int(totals.max())] for b in hist[-1:])


def test_counts_are_cached_per_version_and_tokenizer(store, counter, tmp_path):
    version = make_version(store, RECORDS)
    approx = tokens.count_tokens(store, version)
    exact = tokens.count_tokens(store, version, counter)
    assert approx != exact and str(version.content_hash[:16]) in exact.name
    stamp = exact.stat().st_mtime_ns
    calls = []
    assert tokens.count_tokens(store, version, counter, progress=lambda f, m: calls.append(f)) == exact
    assert exact.stat().st_mtime_ns == stamp and calls == []  # not counted again
    other = tokens.load_tokenizer(store, str(build_tokenizer(tmp_path / "other", CHATML, texts=["x y z"] * 50)))
    assert tokens.count_tokens(store, version, other) not in (approx, exact)
    with pytest.raises(WorkbenchError, match="positive"):
        tokens.truncation(store, exact, 0)


def test_cli_tokens_and_stats(tmp_path, capsys, tok_dir):
    project = str(tmp_path / "p")
    with Store.open(project) as store:
        make_version(store, RECORDS * 3, "tickets")
    assert main(["tokens", "tickets", "--project", project, "--json", "--max-length", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["approximate"] is True and "approximate" in out["rule"] and out["records"] == 18
    assert out["truncation"]["max_length"] == 8 and len(out["by_max_length"]) == len(tokens.TRUNCATION_LENGTHS)
    assert sum(b["records"] for b in out["histograms"]["total_tokens"]) == 18
    assert main(["stats", "tickets", "--project", project, "--json", "--tokenizer", str(tok_dir),
                 "--max-length", "32"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 18 and stats["by_category"] == {"c0": 6, "c1": 6, "c2": 6}
    assert stats["tokens"]["approximate"] is False and stats["tokens"]["truncation"]["max_length"] == 32
    assert set(stats["flags"]) >= {"empty", "short_response", "junk", "language"}
    assert main(["stats", "tickets", "--project", project, "--tokenizer", "tiny"]) == 1
    assert "tiny base model is not built" in capsys.readouterr().err
    code = main(["stats", "tickets", "--project", project])
    text = capsys.readouterr().out
    assert code == 0 and "approximate tokens" in text and "quality flags" in text
