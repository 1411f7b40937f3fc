"""`workbench chat`: talk to a model (a finished run, or a base model with an optional adapter) in the
terminal, or answer one --prompt (workbench.models.playground; trainers.chat underneath)."""

from __future__ import annotations

import sys

from workbench.cli import common
from workbench.cli.common import emit, open_store, terminal_safe
from workbench.core.errors import WorkbenchError

EXIT_WORDS = ("/exit", "/quit")


def cmd_chat(args) -> int:
    from workbench.models import eval_setup, playground

    settings = playground.ChatSettings(system=args.system or "", max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if not args.run and not args.base_model:
        raise WorkbenchError("say which model to talk to: --run RUN_ID, or --base-model tiny|PATH|HF_ID [--adapter DIR]")
    with open_store(args) as store:
        spec = eval_setup.resolve_model(store, run_id=args.run, base_model=args.base_model, adapter=args.adapter)
        models = playground.loaded_models(store)
        if args.prompt is not None:
            messages = playground.conversation(settings, [], args.prompt)
            result = playground.reply(store, spec, messages, settings)
            emit(args, result, result["answer"])
            return 0
        if args.json:
            raise WorkbenchError("--json needs --prompt (one answer); the interactive session prints text")
        if common.borrowed_store() is not None:
            raise WorkbenchError("the app is serving this project, so the terminal session cannot hold the model "
                                 "here; ask one question with --prompt, or use the Playground page")
        print(f"loading {playground.model_label(spec)} ...", file=sys.stderr, flush=True)
        model = models.get(spec)
    try:
        return _session(model, settings)
    finally:
        model.close()


def _session(model, settings) -> int:
    """Read a message, stream the answer, keep the history; EOF (Ctrl-D) or /exit ends it."""
    from workbench.models import playground

    out = getattr(sys.stdout, "raw", sys.stdout)
    print(f"{model.name} ({playground.memory_text(model.memory_bytes())}); /exit or Ctrl-D to leave, "
          "/reset to start over", file=sys.stderr, flush=True)
    history: list[dict] = []
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return 0
        text = line.strip()
        if text in EXIT_WORDS:
            return 0
        if text == "/reset":
            history = []
            continue
        if not text:
            continue
        messages = playground.conversation(settings, history, text)
        out.write("model> " if sys.stdin.isatty() else "")
        for piece in playground.stream(model, messages, settings):
            out.write(terminal_safe(piece))
            out.flush()
        out.write("\n")
        out.flush()
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": model.last["answer"]}]


def register(sub, common, reporting) -> None:
    p = sub.add_parser("chat", parents=[common, reporting], help="talk to a model in the terminal, or answer one prompt",
                       description="Answer --prompt once (with --json: answer, model, new_tokens, seconds), or "
                                   "without it hold a conversation in the terminal (history kept; /exit or Ctrl-D "
                                   "ends it). Greedy by default: the same prompt gets the answer `workbench eval` "
                                   "gives it.")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--run", metavar="RUN_ID", help="a finished training run (its base model and adapter)")
    model.add_argument("--base-model", metavar="M", help="'tiny', a local model folder or a cached Hugging Face id")
    p.add_argument("--adapter", metavar="DIR", help="an adapter folder to apply on --base-model")
    p.add_argument("--system", metavar="TEXT", help="a system message put first in the conversation")
    p.add_argument("--prompt", metavar="TEXT", help="answer this one message and exit")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="longest answer in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 for greedy decoding (default, deterministic); above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling threshold when sampling")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: a fresh draw)")
    p.set_defaults(func=cmd_chat)
