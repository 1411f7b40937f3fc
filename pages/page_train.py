"""Train: pick a dataset version, a base model and settings, check the run with a pre-flight, start it,
and follow every run live (loss curves, learning rate, speed, time left, the adapter it produced)."""

import html

import altair as alt
import pandas as pd
import streamlit as st

import train_export
import train_sweep
import wb_ui
import widgets
from trainers.config import FSDP_MODES, METHODS, PRECISIONS, SCHEDULES, TrainConfig, field_help
from workbench.models import record_losses, runs

HELP = field_help()
DEFAULTS = TrainConfig()
CHOICES = {"lr_schedule": SCHEDULES, "precision": PRECISIONS, "fsdp": FSDP_MODES}
# The settings a person tunes, in the order they think about them; the rest keep their defaults.
SETTINGS = {
    "Adapter": ["lora_rank", "lora_alpha", "lora_dropout", "target_modules", "num_virtual_tokens"],
    "Optimisation": ["learning_rate", "lr_schedule", "warmup_steps", "epochs", "max_steps", "batch_tokens",
                     "grad_accum", "max_seq_len", "seed"],
    "Validation and outputs": ["eval_every", "early_stopping_patience", "checkpoint_every", "packing", "precision",
                               "gradient_checkpointing", "merge"],
    "Preference training (methods dpo and kto)": ["beta", "loss_variant", "kto_desirable_weight",
                                                   "kto_undesirable_weight", "start_adapter"],
    "More than one GPU": ["fsdp"],
}
LABELS = {"fsdp": "FSDP"}  # where the field's name does not read as a label
ACTIVE = ("running", "prepared")
FINISHED = ("completed", "stopped early")
HARDEST_SHOWN = 200
PICK = "train_"


def setting(name: str, default, column):
    """One widget for one TrainConfig field, with the field's docstring as its help line."""
    key, label = f"train_{name}", LABELS.get(name, name.replace("_", " ").capitalize())
    if name in CHOICES:
        options = list(CHOICES[name])
        return column.selectbox(label, options, index=options.index(default), key=key, help=HELP[name])
    if isinstance(default, bool):
        return column.checkbox(label, value=default, key=key, help=HELP[name])
    if isinstance(default, int):
        return int(column.number_input(label, value=default, min_value=0, step=1, key=key, help=HELP[name]))
    if isinstance(default, float):
        fmt = "%.1e" if name == "learning_rate" else "%.2f"
        return float(column.number_input(label, value=default, min_value=0.0, format=fmt, key=key, help=HELP[name]))
    return column.text_input(label, value=default, key=key, help=HELP[name])


def show_example(segments: list[dict]) -> None:
    """The rendered template with the trained tokens highlighted (every piece of text HTML-escaped)."""
    body = "".join(f"<mark>{html.escape(s['text'])}</mark>" if s["trained"] else html.escape(s["text"])
                   for s in segments)
    st.html(f"<pre style='white-space: pre-wrap; font-size: 0.85em'>{body}</pre>")


def show_preflight(out: dict) -> None:
    st.markdown(f"**Pre-flight** for {out['ref']} ({out['split']}):")
    c = [*st.columns(3), *st.columns(3)]  # three a row: long labels stay whole
    c[0].metric("Train / validation records", f"{out['train_records']:,} / {out['val_records']:,}")
    c[1].metric("Tokens per example", f"{out['tokens_mean']:.0f}", help=f"median {out['tokens_median']}, "
                f"95th percentile {out['tokens_p95']}, longest {out['tokens_max']}")
    c[2].metric(f"Cut at {out['max_seq_len']} tokens", f"{out['truncated']:,}",
                help="Examples longer than max_seq_len lose their end; raise max_seq_len to keep them whole.")
    c[3].metric("Supervised tokens per epoch", f"{out['supervised_tokens_per_epoch']:,}",
                help="Assistant tokens that carry a loss; prompts and template markers do not.")
    c[4].metric("Time per epoch", _duration(out["seconds_per_epoch"]),
                help=f"Measured: {out['seconds_per_step']:.2f} s per step on {out['device']}, "
                     f"{out['steps_per_epoch']:,} steps per epoch; planned {out['planned_steps']:,} steps, "
                     f"about {_duration(out['seconds_planned'])}.")
    c[5].metric("Tokens per step", f"{out['batch_tokens']:,}",
                help="; ".join(out.get("batch_plan") or []) + "." if out.get("batch_plan") else None)
    for note in out["notes"]:
        st.caption(note)
    st.caption("One training example as the model sees it; the highlighted text is what the loss is computed on.")
    show_example(out["example"])


def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


def _loss(x) -> str:
    return "–" if x is None else f"{x:.4f}"


# ---------------------------------------------------------------- a new run

def settings_form(defaults, right, far) -> tuple[dict, int]:
    """Base model, method and the tuned settings; returns default_config's keyword arguments and the GPUs to
    train on."""
    base_model = right.text_input("Base model", value=defaults.base_model, key="train_base_model",
                                  help=HELP["base_model"])
    method = far.selectbox("Method", METHODS, index=METHODS.index(defaults.method), key="train_method",
                           help=HELP["method"])
    values = {"base_model": base_model.strip(), "method": method}
    with st.expander("Settings", icon=":material/tune:"):
        for group, names in SETTINGS.items():
            st.caption(group)
            cols = st.columns(5)
            for i, name in enumerate(names):
                values[name] = setting(name, getattr(defaults, name), cols[i % 5])
        gpus = gpu_control(cols[len(names) % 5])
    return values, gpus


def gpu_control(column) -> int:
    """How many GPUs the run trains on: offered up to the machine's count, fixed at 1 with fewer than two."""
    have = runs.gpu_count()
    where = {0: "This machine has no GPU: the run trains on the CPU.",
             1: "This machine has one GPU."}.get(have, f"This machine has {have} GPUs.")
    return int(column.number_input(
        "GPUs", min_value=1, max_value=max(have, 1), value=1, step=1, key="train_gpus", disabled=have < 2,
        help=f"{where} More than one trains under torchrun: a copy of the model on each GPU (DDP), or the model "
             "sharded across them (FSDP2) when it will not fit one or FSDP is on; the adapter is the same."))


def project_defaults(store) -> TrainConfig:
    with widgets.user_errors():
        return runs.default_config(store)
    return DEFAULTS


def new_run_section(store) -> None:
    with st.expander("New run", icon=":material/add_circle:", expanded=True):
        left, middle, right, far = st.columns([3, 1.6, 2, 1.6])  # "v12 (newest)" stays whole
        version = widgets.version_picker(
            store, PICK, columns=(left, middle),
            dataset_help="The dataset to train on: its train split, validated on its val split (or a seeded "
                         "holdout when it has no split column).",
            version_help="Runs record the exact version (and its content hash) they trained on.",
            empty="No datasets yet: import one on the Datasets page, then train a LoRA adapter on it here.")
        if version is None:
            return
        values, gpus = settings_form(project_defaults(store), right, far)
        b1, b2, _ = st.columns([1, 1, 4])
        check = b1.button("Pre-flight", icon=":material/checklist:", key="train_preflight",
                          help="Render one example, count tokens and truncation, and time a few steps on this "
                               "machine before spending compute.")
        start = b2.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start",
                          help="Start the run in the background; it keeps training if you close the browser.")
        with widgets.user_errors():
            if check or start:
                cfg = runs.default_config(store, **values)
            if check:
                with st.spinner("Rendering, counting tokens and timing a few steps…"):
                    st.session_state["train_preflight_result"] = {**runs.preflight(store, version.ref, cfg),
                                                                  "ref": version.ref}
            elif start:
                st.session_state["train_run_select"] = runs.launch(store, version.ref, cfg, nproc_per_node=gpus,
                                                                   user=wb_ui.current_user())
                st.session_state.pop("train_preflight_result", None)
                st.rerun()
        if "train_preflight_result" in st.session_state:
            show_preflight(st.session_state["train_preflight_result"])


# ---------------------------------------------------------------- runs

def runs_table(store) -> None:
    """Every run with its step and losses (a fragment that refreshes while one trains)."""
    widgets.table(pd.DataFrame(runs.list_runs(store)), column_order=[
        "run_id", "status", "dataset", "version", "base_model", "method", "step", "train_loss", "eval_loss"],
        column_config={"run_id": "run", "base_model": "base model",
                       "train_loss": st.column_config.NumberColumn("train loss", format="%.4f"),
                       "eval_loss": st.column_config.NumberColumn("validation loss", format="%.4f")})


def loss_chart(losses: list[dict]) -> alt.Chart:
    return alt.Chart(pd.DataFrame(losses)).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("step:Q", title="optimizer step", axis=widgets.count_axis()),
        y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["train", "validation"])),
        tooltip=["kind:N", "step:Q", alt.Tooltip("loss:Q", format=".4f")])


def reward_chart(points: list[dict]) -> alt.Chart:
    """A preference run: how often the adapter prefers the chosen answer (reward accuracy) and by how much
    (reward margin), training and validation."""
    return alt.Chart(pd.DataFrame(points)).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("step:Q", title="optimizer step", axis=widgets.count_axis()),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["train", "validation"])),
        tooltip=["figure:N", "kind:N", "step:Q", alt.Tooltip("value:Q", format=".4f")]).properties(
        width=320, height=180).facet(column=alt.Column("figure:N", title=None)).resolve_scale(y="independent")


def run_metrics(d: dict) -> None:
    total = d["total_steps"] or 0
    c = st.columns([1.7, 1, 1, 1.1, 1, 1])  # "interrupted" and "completed" stay whole
    c[0].metric("Status", d["status"], help=d["phase"] or None)
    c[1].metric("Step", f"{d['step']:,} / {total:,}" if total else f"{d['step']:,}")
    c[2].metric("Train loss", _loss(d["train_loss"]), help="Mean over the last 20 steps.")
    c[3].metric("Validation loss", _loss(d["eval_loss"]), help="The best validation loss so far (the adapter kept).")
    speed = d.get("speed") or {}
    supervised = speed.get("steady_supervised_tokens_per_s", d.get("supervised_tokens_per_s"))
    every = speed.get("steady_tokens_per_s", d["tokens_per_s"])
    c[4].metric("Supervised tok/s", "–" if supervised is None else f"{supervised:,.0f}",
                help=" ".join(filter(None, [
                    "Tokens that carry a loss (the answers), per second" + (
                        ", steady state" if "steady_supervised_tokens_per_s" in speed else ", last step") + ".",
                    f"All tokens: {every:,.0f}/s." if every is not None else None,
                    f"Learning rate {d['lr']:.2e}." if d["lr"] is not None else None])))
    c[5].metric("Time left", _duration(d["remaining_s"]), help=f"Elapsed: {_duration(d['elapsed_s'])}.")
    if d["status"] == "running":
        st.progress(min(d["step"] / total, 1.0) if total else 0.0,
                    text=f"{d['phase'] or 'starting'} · {_duration(d['elapsed_s'])} elapsed")
    if d["message"]:
        (st.warning if d["status"] in ("cancelled", "interrupted") else st.error)(d["message"])
    plan = d.get("batch_plan") or {}
    if plan.get("reasons"):
        st.caption(f"Batch plan, {plan['batch_tokens']:,} tokens a step: " + "; ".join(plan["reasons"]) + ".")
    if d.get("setup"):
        st.caption(setup_line(d["setup"]))
    if speed:
        st.caption(speed_line(speed))


SETUP_PARTS = {"base": "pre-training the tiny base", "load": "loading the model", "tokenize": "tokenizing",
               "probe": "the memory probe (its first step compiles)", "first_eval": "the first validation",
               "other": "the rest"}


def setup_line(setup: dict) -> str:
    """The setup event in words: where the time before the first step went, largest part first."""
    parts = sorted(((v, k) for k, v in setup["parts"].items() if v >= 0.05), reverse=True)
    def short(seconds: float) -> str:
        return f"{seconds:.1f} s" if seconds < 60 else _duration(seconds)

    return (f"Before the first step: {short(setup['seconds'])} (" +
            ", ".join(f"{SETUP_PARTS.get(k, k)} {short(v)}" for v, k in parts) + ").")


def speed_line(speed: dict) -> str:
    """The end event's steady state in words (runs.SPEED_KEYS)."""
    parts = []
    if "steady_supervised_tokens_per_s" in speed:
        parts.append(f"Steady state (after the first steps): {speed['steady_supervised_tokens_per_s']:,.0f} "
                     f"supervised tokens/s, {speed['steady_tokens_per_s']:,.0f} in all")
    if "peak_gpu_memory_gb" in speed:
        parts.append(f"peak GPU memory {speed['peak_gpu_memory_gb']:,.1f} GiB")
    if "mfu" in speed:
        parts.append(f"model FLOPs utilisation {speed['mfu']:.1%} ({speed['model_tflops_per_s']:,.0f} TFLOP/s a GPU)")
    elif "model_tflops_per_s" in speed and "peak_gpu_memory_gb" in speed:  # a GPU whose peak is not known
        parts.append(f"{speed['model_tflops_per_s']:,.2f} model TFLOP/s (MFU needs the GPU's peak)")
    return " · ".join(parts) + "."


def run_buttons(store, run_id: str, status: str) -> None:
    b1, b2, _ = st.columns([1, 1, 4])
    if status == "running" and b1.button("Cancel", icon=":material/stop:", key="train_cancel",
                                         help="Stop after the current step; a checkpoint and the adapter "
                                              "are saved first."):
        with widgets.user_errors():
            runs.cancel_run(store, run_id, user=wb_ui.current_user())
            st.toast("Cancelling: the run saves a checkpoint and its adapter first.")
    if status in ("cancelled", "interrupted") and b2.button(
            "Resume", icon=":material/replay:", key="train_resume",
            help="Continue from the last checkpoint with the same settings."):
        with widgets.user_errors():
            runs.start_run(store, run_id, user=wb_ui.current_user())
            st.rerun(scope="app")


def run_view(store, run_id: str, was_running: bool) -> None:
    """The run's live state (a fragment that refreshes every 2 s while it trains)."""
    with widgets.user_errors():
        d = runs.run_details(store, run_id)
        if was_running and d["status"] not in ACTIVE:
            runs.sync_runs(store)  # record the result, then redraw the whole page with it
            st.rerun(scope="app")
        run_metrics(d)
        if d["losses"]:
            st.altair_chart(loss_chart(d["losses"]), width="stretch")
        if d["rewards"]:
            st.altair_chart(reward_chart(d["rewards"]), width="stretch")
        run_buttons(store, run_id, d["status"])
        if d["adapter"]:
            st.caption("Adapter (peft format; loads with `PeftModel.from_pretrained(base, path)`):")
            st.code(d["adapter"], language=None)
        if d["status"] in FINISHED:
            hardest_records(store, run_id, d["run_dir"])
        with st.expander("Manifest and settings", icon=":material/receipt_long:"):
            st.json(d["manifest"] or d["config"], expanded=False)
        with st.expander("Trainer log", icon=":material/terminal:"):
            st.code(d["log_tail"] or "(empty)", language=None)


def loss_histogram(losses: pd.DataFrame) -> alt.Chart:
    return alt.Chart(losses).mark_bar().encode(
        x=alt.X("loss:Q", bin=alt.Bin(maxbins=40), title="mean loss per answer token"),
        y=alt.Y("count():Q", title="records", axis=widgets.count_axis()),
        tooltip=[alt.Tooltip("count():Q", title="records", format=",")]).properties(height=160)


def hardest_records(store, run_id: str, run_dir: str) -> None:
    """The training records the run's adapter fits worst, highest loss first; the top N can be flagged."""
    with st.expander("Hardest records", icon=":material/troubleshoot:"):
        losses = record_losses.read_losses(run_dir)
        if losses is None or losses.empty:
            st.caption(record_losses.note(run_dir) or "This run recorded no per-record losses (its record_losses "
                                                      "setting was off, or it ran before they were recorded).")
            return
        st.caption(f"Each of the {len(losses):,} training records' mean loss per answer token under the run's "
                   "adapter, highest first: records the adapter could not fit are often mislabelled or off-policy.")
        st.altair_chart(loss_histogram(losses), width="stretch")
        shown = record_losses.hardest_records(store, run_id, limit=HARDEST_SHOWN)
        widgets.table(shown.assign(row=shown["row"] + 1), column_order=["row", "loss", "prompt", "answer"],
                      width="stretch", column_config={
                          "row": st.column_config.NumberColumn("row", help="The record's row in the version, from 1."),
                          "loss": st.column_config.NumberColumn("loss", format="%.3f"),
                          "prompt": st.column_config.TextColumn(width="large"),
                          "answer": st.column_config.TextColumn(width="large")})
        c1, c2, _ = st.columns([1, 1, 2])
        top = c1.number_input("Top N records", 1, len(losses), min(len(losses), 20), key=f"train_hard_top_{run_id}",
                              help="How many of the hardest records, from the top, to flag.")
        if c2.button("Flag for review", key=f"train_hard_flag_{run_id}", icon=":material/flag:",
                     help="Puts these records first in the Label page's queue, each with its training loss as the "
                          "reason."):
            with widgets.user_errors():
                n = record_losses.flag_hardest(store, run_id, int(top), user=wb_ui.current_user())
                st.success(f"Flagged {widgets.plural(n, 'record')}: the Label queue shows them first.",
                           icon=":material/flag:")


def runs_section(store) -> None:
    st.subheader("Runs")
    table = runs.list_runs(store)
    if not table:
        st.info("No runs yet. Start one above; it appears here with its live loss curves.")
        return
    st.fragment(run_every=2.0 if any(r["status"] in ACTIVE for r in table) else None)(runs_table)(store)
    ids = [r["run_id"] for r in table]
    if st.session_state.get("train_run_select") not in ids:
        st.session_state["train_run_select"] = ids[0]
    run_id = st.selectbox("Run", ids, key="train_run_select", help="The run to follow; the newest is first.")
    running = next(r["status"] for r in table if r["run_id"] == run_id) in ACTIVE
    st.fragment(run_every=2.0 if running else None)(run_view)(store, run_id, running)
    train_export.render_export(store, run_id)  # merged / GGUF / Ollama, once the run has an adapter


# ---------------------------------------------------------------- the page

store = wb_ui.get_store()
st.title("Train")
new_run_section(store)
train_sweep.sweep_section(store)
runs_section(store)
train_sweep.compare_section(store)
