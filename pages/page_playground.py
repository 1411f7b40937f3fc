"""Playground: ask up to three models (the base, finished runs, a local folder) the same questions side by
side, answers streamed as they are written; then correct an answer and save it as a training record, or
flag it for the Label queue. Everything goes through workbench.models.playground."""

import streamlit as st

import wb_ui
import widgets
from workbench.core.errors import WorkbenchError
from workbench.models import playground

HELP = playground.settings_help()
DEFAULTS = playground.ChatSettings()
FOLDER = "folder"
MAX_MODELS = 3
NO_CATEGORY = "(no category)"
PICK = "pg_"

store = wb_ui.get_store()
user = wb_ui.current_user()

st.title("Playground")
st.caption("Talk to a base model or a trained one before you trust it. Every model gets the same conversation; "
           "each keeps its own history. Greedy answers (temperature 0) are the ones `workbench eval` would give.")


def pick_models() -> list:
    """The chosen models as ModelSpecs (resolved by workbench.models.playground), at most three."""
    choices = {c["key"]: c["label"] for c in playground.model_choices(store)}
    labels = {**choices, FOLDER: "A local folder (a model, or an adapter)"}
    default = [k for k in choices][:1]
    keys = st.multiselect("Models", list(labels), default=default, max_selections=MAX_MODELS,
                          format_func=lambda k: labels[k], key=f"{PICK}models",
                          help="Up to three: the base model, any finished training run, or a local folder. "
                               "They answer the same conversation side by side.")
    if FOLDER in keys:
        folder = st.text_input("Local folder", key=f"{PICK}folder", placeholder="/path/to/model-or-adapter",
                               help="A model folder (config.json and weights), an adapter folder "
                                    "(adapter_config.json naming its base) or a run folder with adapter/ inside.")
        keys = [k for k in keys if k != FOLDER] + ([f"folder:{folder.strip()}"] if folder.strip() else [])
    specs = []
    for key in keys:
        with widgets.user_errors():
            specs.append((key, playground.resolve(store, key)))
    return specs


def settings_form() -> tuple:
    with st.expander("Settings", expanded=True):
        system = st.text_area("System prompt", key=f"{PICK}system", height=68, help=HELP["system"])
        left, middle, right = st.columns(3)
        temperature = left.slider("Temperature", 0.0, 2.0, DEFAULTS.temperature, 0.05, key=f"{PICK}temperature",
                                  help=HELP["temperature"])
        top_p = middle.slider("Top-p", 0.05, 1.0, DEFAULTS.top_p, 0.05, key=f"{PICK}top_p", help=HELP["top_p"])
        max_new = int(right.number_input("Max answer length (tokens)", 1, 8192, DEFAULTS.max_new_tokens, 16,
                                         key=f"{PICK}max_new_tokens", help=HELP["max_new_tokens"]))
        rendered = st.toggle("Show the rendered prompt", key=f"{PICK}rendered",
                             help="The exact text each model reads: the conversation with its chat template "
                                  "applied, ending where the model's answer starts.")
    with widgets.user_errors(stop=True):
        settings = playground.ChatSettings(system=system, max_new_tokens=max_new, temperature=temperature,
                                           top_p=top_p)
    return settings, rendered


def histories() -> dict:
    return st.session_state.setdefault(f"{PICK}history", {})


def loaded(spec):
    models = playground.loaded_models(store)
    if models.is_loaded(spec):
        return models.get(spec)
    with st.spinner(f"Loading {spec.label}…"):
        return models.get(spec)


def model_column(column, key: str, spec, settings, question: str | None, rendered: bool) -> None:
    """One model: its memory and unload button, its history, and its streamed answer to the new question."""
    history = histories().setdefault(key, [])
    with column:
        st.subheader(spec.label, anchor=False)
        status = st.container()
        for message in history:
            with st.chat_message(message["role"]):
                st.markdown(wb_ui.safe_markdown(message["content"]) or "*(an empty answer)*")
        if question is not None:
            with widgets.user_errors():
                answer(key, spec, settings, question, history)
        last = st.session_state.get(f"{PICK}last::{key}")
        if rendered and last and playground.loaded_models(store).is_loaded(spec):
            st.caption("The rendered prompt of the last question:")
            st.code(playground.rendered_prompt(loaded(spec), last["messages"]), language=None, wrap_lines=True)
        with status:
            memory_and_unload(key, spec)


def answer(key: str, spec, settings, question: str, history: list) -> None:
    model = loaded(spec)
    messages = playground.conversation(settings, history, question)
    with st.chat_message("user"):
        st.markdown(wb_ui.safe_markdown(question))
    with st.chat_message("assistant"):
        st.write_stream(wb_ui.safe_markdown(piece) for piece in playground.stream(model, messages, settings))
        shown = model.last["answer"] or "(an empty answer)"
        st.caption(f"{model.last['new_tokens']} new tokens in {model.last['seconds']:.2f} s"
                   + ("" if model.last["answer"] else f" · {shown}"))
    history += [{"role": "user", "content": question}, {"role": "assistant", "content": model.last["answer"]}]
    st.session_state[f"{PICK}last::{key}"] = {"messages": messages, "answer": model.last["answer"]}


def memory_and_unload(key: str, spec) -> None:
    models = playground.loaded_models(store)
    if not models.is_loaded(spec):
        st.caption("Not loaded: it loads with the next message.")
        return
    memory = next((m["memory_bytes"] for m in models.listing()
                   if (m["base_model"], m["adapter"]) == (spec.base_model, spec.adapter)), 0)
    st.caption(f"Loaded · {playground.memory_text(memory)} of weights")
    if st.button("Unload", key=f"{PICK}unload::{key}", help="Free the memory this model holds; it loads again with "
                 "the next message."):
        models.unload(spec)
        st.rerun()


def back_to_data(specs, settings) -> None:
    """Correct a model's last answer and save it as a training record, or flag it for the Label queue."""
    answered = [(key, spec) for key, spec in specs if f"{PICK}last::{key}" in st.session_state]
    st.subheader("Back to the data", anchor=False)
    if not answered:
        st.caption("Ask something first; then an answer can be corrected and saved as a training record.")
        return
    names = playground.datasets(store)
    if not names:
        st.info("Import a chat or prompt-completion dataset to save corrected answers into.", icon=":material/info:")
        return
    labels = {key: spec.label for key, spec in answered}
    key = st.selectbox("Answer to correct", list(labels), format_func=lambda k: labels[k], key=f"{PICK}which",
                       help="Whose latest answer becomes a record: the conversation up to the question, then "
                            "your corrected answer.")
    spec = dict(answered)[key]
    last = st.session_state[f"{PICK}last::{key}"]
    corrected = st.text_area("Corrected answer", value=last["answer"], height=120,
                             key=f"{PICK}corrected::{key}::{len(histories().get(key, []))}",
                             help="Edit the model's answer into the one it should have given.")
    left, right = st.columns(2)
    dataset = left.selectbox("Dataset", names, key=f"{PICK}dataset",
                             help="The record is added to a new version of this dataset (from its newest version); "
                                  "the recipe says it came from the playground and which model answered.")
    with widgets.user_errors():
        category = right.selectbox("Category", [NO_CATEGORY, *playground.categories(store, dataset)],
                                   key=f"{PICK}category::{dataset}",
                                   help="The category the new record belongs to (the dataset's own values).")
    category = None if category in (None, NO_CATEGORY) else category
    save, flag = st.columns(2)
    if save.button("Save as a training record", type="primary", key=f"{PICK}save",
                   help="Write a new version of the dataset with this conversation and the corrected answer."):
        with widgets.user_errors():
            version = playground.save_correction(store, dataset, last["messages"], corrected, model=spec,
                                                 answer=last["answer"], category=category, settings=settings,
                                                 user=user)
            st.success(f"Saved as record {version.row_count:,} of {wb_ui.safe_markdown(version.ref)}.",
                       icon=":material/check:")
    reason = flag.text_input("Why it needs another look", key=f"{PICK}reason",
                             help="Flagging adds the conversation and the model's own answer as a record of a new "
                                  "version, first in the Label queue with this reason.")
    if flag.button("Flag for the Label queue", key=f"{PICK}flag", help="Send the answer as it is, with the reason."):
        with widgets.user_errors():
            out = playground.flag_answer(store, dataset, last["messages"], last["answer"], reason, model=spec,
                                         category=category, settings=settings, user=user)
            st.success(f"Flagged record {out['row'] + 1:,} of {wb_ui.safe_markdown(out['version'])}.",
                       icon=":material/flag:")


def loaded_listing() -> None:
    listing = playground.loaded_models(store).listing()
    if listing:
        total = sum(m["memory_bytes"] for m in listing)
        st.caption(f"{widgets.plural(len(listing), 'model')} loaded, {playground.memory_text(total)} of weights: "
                   + ", ".join(wb_ui.safe_markdown(m["name"]) for m in listing))


specs = pick_models()
settings, rendered = settings_form()
if not specs:
    st.info("Pick a model to talk to. Train one on the **Train** page, or give a local folder.", icon=":material/info:")
    st.stop()
conversations = st.container()  # drawn above the question box, filled once its value is known
with st.container():  # inside a container the box stays in the page, above "Back to the data"
    question = st.chat_input("Ask the models…", key=f"{PICK}question")
if st.button("New conversation", key=f"{PICK}reset", help="Forget every model's history and start again."):
    st.session_state[f"{PICK}history"] = {}
    for k in [k for k in st.session_state if str(k).startswith(f"{PICK}last::")]:
        del st.session_state[k]
    question = None
with conversations:
    for column, (key, spec) in zip(st.columns(len(specs)), specs):
        try:
            model_column(column, key, spec, settings, question, rendered)
        except WorkbenchError as exc:
            with column:
                widgets.show_error(exc)
back_to_data(specs, settings)
with st.sidebar:
    loaded_listing()
