"""Real model families and methods through the product on one GPU: Llama, Mistral, Gemma and Phi-3 folders
(random weights, `save_pretrained`, each with its own chat template), then QLoRA and DoRA on the Qwen2.5-0.5B
shape, each through the two processes that `workbench train` and `workbench eval` start, with default settings.

    python bench/families_gpu.py --out /tmp/families          # on a GPU
    python bench/families_gpu.py --tiny --out /tmp/families   # a CPU dry run (small shapes; qlora skipped)

One JSON line per run: the batch plan, steady supervised tokens/s, MFU, peak memory and first/last loss of
training, then the evaluation's new tokens/s and wall time. The chat templates are the families' own styles,
the ones the CPU test (tests/trainers/test_trainer_families.py) trains, merges and reloads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import product_gpu as P  # noqa: E402
from tests.trainers.test_trainer_families import FAMILIES  # noqa: E402

# A small real-looking shape per family (about 0.2B parameters with the 32k vocabulary) so four fit a call.
SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=3000, max_position_embeddings=1024)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--families", default="llama,mistral,gemma,phi3")
    p.add_argument("--methods", default="qlora,dora", help="on the Qwen2.5-0.5B shape ('' for none)")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--test", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    shape, qwen, extra = SHAPE, P.QWEN05, {}
    if args.tiny:
        shape, qwen, extra = TINY, P.TINY, {"cpu_threads": 1}
        args.records, args.test, args.max_steps, args.max_new_tokens = 60, 8, 4, 8
    rows = P.records(args.records, args.test)
    texts = [m["content"] for r in rows for m in r["messages"]]
    test_rows = [r for r in rows if r["split"] == "test"]
    P.report(out, {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                   "torch": torch.__version__, "records": args.records, "max_steps": args.max_steps})
    head_dim = {"head_dim": shape["hidden_size"] // shape["num_attention_heads"]}  # the test's gemma sets one
    runs = [(f, FAMILIES[f][0], {**shape, **FAMILIES[f][1], **(head_dim if "head_dim" in FAMILIES[f][1] else {})},
             FAMILIES[f][2], "lora") for f in filter(None, args.families.split(","))]
    runs += [(f"qwen2-{m}", "Qwen2Config", qwen, None, m) for m in filter(None, args.methods.split(","))
             if torch.cuda.is_available() or m != "qlora"]
    built: dict[str, Path] = {}
    for name, config_name, s, template, method in runs:
        key = f"{config_name}-{sorted(s.items())}"
        if key not in built:
            built[key] = out / f"model-{name}"
            P.build_model_folder(built[key], s, texts, 600 if args.tiny else 8000, config_name=config_name,
                                 template=template)
        model_dir = built[key]
        row = {"family": name, "method": method, **P.train(out, model_dir, rows, args.max_steps,
                                                            {**extra, "method": method}, name=f"run-{name}")}
        P.report(out, row)
        if row.get("status") == "completed":
            P.report(out, {"family": name, **P.evaluate(out, model_dir, test_rows, args.max_new_tokens,
                                                        run_name=f"run-{name}")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
