"""`workbench serve-model`: an OpenAI-compatible endpoint (/v1/models, /v1/chat/completions) for a finished
run or a base model with an optional adapter (workbench.models.serve_model; trainers.chat underneath)."""

from __future__ import annotations

import json
import sys

from workbench.cli import common
from workbench.cli.common import open_store
from workbench.core.errors import WorkbenchError


def default_name(spec, run_id: str | None, base_model: str | None) -> str:
    """The model id clients ask for: `run-ID` for a run, else the base model as given (+ the adapter's run)."""
    from pathlib import Path

    if run_id:
        return f"run-{run_id}"
    name = Path(base_model or spec.base_model).name or str(base_model)
    return f"{name}+{Path(spec.adapter).parent.name}" if spec.adapter else name


def cmd_serve_model(args) -> int:
    from trainers.chat import ChatModel
    from trainers.config import ConfigError
    from workbench.models import eval_setup
    from workbench.models.serve_model import make_server

    if common.borrowed_store() is not None:
        raise WorkbenchError("the app is serving this project, so serve-model cannot hold the model here; run it "
                             "in a terminal while the app is stopped, or give --base-model with a folder")
    if not args.run and not args.base_model:
        raise WorkbenchError("say which model to serve: --run RUN_ID, or --base-model tiny|PATH|HF_ID [--adapter DIR]")
    with open_store(args) as store:
        spec = eval_setup.resolve_model(store, run_id=args.run, base_model=args.base_model, adapter=args.adapter)
    name = args.name or default_name(spec, args.run, args.base_model)
    print(f"loading {spec.label or spec.base_model} ...", file=sys.stderr, flush=True)
    try:
        model = ChatModel.load(spec.base_model, spec.adapter, device=args.device)
    except ConfigError as exc:
        raise WorkbenchError(str(exc)) from None
    try:
        server = make_server(model, name=name, host=args.host, port=args.port)
    except OSError as exc:
        raise WorkbenchError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; pick another "
                             "--port") from None
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/v1"
    if args.json:
        print(json.dumps({"url": url, "model": name, "base_model": spec.base_model, "adapter": spec.adapter}),
              flush=True)
    else:
        print(f"serving {name} at {url} (OpenAI-compatible; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        model.close()
    return 0


def register(sub, common, reporting) -> None:
    p = sub.add_parser("serve-model", parents=[common, reporting],
                       help="serve a model on an OpenAI-compatible endpoint (/v1/chat/completions)",
                       description="Load one model (a finished run, or a base model with an optional adapter) and "
                                   "answer /v1/models and /v1/chat/completions (streaming included) until Ctrl-C. "
                                   "With --json the first line printed is {url, model, base_model, adapter}.")
    model = p.add_mutually_exclusive_group()  # neither: resolve_model says what to give
    model.add_argument("--run", metavar="RUN_ID", help="a finished training run (its base model and adapter)")
    model.add_argument("--base-model", metavar="M", help="'tiny', a local model folder or a cached Hugging Face id")
    p.add_argument("--adapter", metavar="DIR", help="an adapter folder to apply on --base-model")
    p.add_argument("--name", metavar="NAME", help="the model id clients ask for (default: run-RUN_ID or the base "
                                                  "model's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.set_defaults(func=cmd_serve_model)
