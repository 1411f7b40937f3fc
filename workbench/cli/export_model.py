"""`workbench export-model RUN_ID --format merged|gguf|ollama --out PATH`: a finished run as files that
serving tools load (workbench.models.export_model; trainers.export underneath)."""

from __future__ import annotations

from workbench.cli.common import ProgressBar, emit, open_store


def cmd_export_model(args) -> int:
    from workbench.models import export_model

    with open_store(args) as store:
        plan = export_model.plan_export(store, args.run_id, args.format, args.out, dtype=args.dtype,
                                        force=args.force)
    payload = export_model.run_export(plan, progress=ProgressBar(not args.json))
    emit(args, payload, export_model.describe(payload))
    return 0


def register(sub, common, reporting) -> None:
    from workbench.models.export_model import DTYPES, FORMATS

    p = sub.add_parser("export-model", parents=[common, reporting],
                       help="export a finished run: merged transformers folder, GGUF, or GGUF + Ollama Modelfile",
                       description="Merge a finished run's adapter into its base model and write it where serving "
                                   "tools load it: `merged` (a transformers folder for transformers and vLLM), "
                                   "`gguf` (one GGUF file for llama.cpp and LM Studio), `ollama` (the GGUF file and a "
                                   "Modelfile). The folder gets a README.md saying where the model came from and "
                                   "how to load it. --json prints {format, path, files, bytes, run, seconds, ...}.")
    p.add_argument("run_id", metavar="RUN_ID", help="a finished training run (see `workbench runs`)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="merged: transformers folder; gguf: one GGUF file; ollama: GGUF file + Modelfile")
    p.add_argument("--out", required=True, metavar="PATH", help="the folder to write (it must not exist yet)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights type: f32, f16, bf16 (exact up to that precision) or q8_0 (GGUF only, 8-bit); "
                        "default: the base model's own type for merged, f16 for GGUF")
    p.add_argument("--force", action="store_true", help="replace --out when it holds an earlier export")
    p.set_defaults(func=cmd_export_model)
