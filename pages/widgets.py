"""Widgets the pages share: the dataset-version picker, a progress bar that library functions report to,
user errors shown as one red line (in the app's words), and small helpers for tables, charts and counts."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import altair as alt
import streamlit as st

import wb_ui
from workbench.core import versions
from workbench.core.errors import WorkbenchError

# ---------------------------------------------------------------- user errors

# The library speaks to the CLI and the app alike; in the app a flag is a control to click.
APP_WORDS = [
    (re.compile(r"Pass --format and the column flags \([^)]*\)"),
     "Tick **Choose the columns myself** under Import a file"),
    (re.compile(r"leave --tokenizer out"), "choose **Approximate (no tokenizer)**"),
    (re.compile(r"train once with `workbench train` to build it"),
     "start a run on the **Train** page once to build it"),
    (re.compile(r"\(?--allow-short\)?"), "(tick **Accept the shortfall**)"),
    (re.compile(r"raise --max-copies"), "raise **Max copies**"),
    (re.compile(r"--max-copies"), "**Max copies**"),
    (re.compile(r"name the column to balance by with --by"), "pick a column under **Balance by**"),
    (re.compile(r"--min/--max"), "**Minimum per value** / **Maximum per value**"),
    (re.compile(r"--ratios"), "**Ratios**"),
    (re.compile(r"use --level nominal \(or ordinal with the order given\)"),
     "choose **nominal** under **Level of measurement** (or ordinal with an **Answer order**)"),
    (re.compile(r"for example --labels "), "for example, under **Answer order**: "),
    (re.compile(r"the first training run builds it: `workbench train --dataset NAME`"),
     "the first run on the **Train** page builds it"),
    (re.compile(r"resume it with `workbench eval --resume \d+`"), "resume it under **unfinished evaluations**"),
]


def app_words(message: str) -> str:
    """A library message with its CLI flags replaced by the controls of the app that set them."""
    for pattern, words in APP_WORDS:
        message = pattern.sub(words, message)
    return message


def show_error(exc: BaseException | str) -> None:
    """A user error as one red line in the app's words, never a traceback."""
    wb_ui.show_error(app_words(str(exc)))


@dataclass
class Caught:
    """What `user_errors` caught: `error` stays None when the section ran to its end."""
    error: WorkbenchError | None = None


@contextmanager
def user_errors(*, stop: bool = False):
    """`with user_errors():` runs a section; a WorkbenchError ends the section and is shown as one red
    line. stop=True ends the whole page there (for what everything below depends on)."""
    caught = Caught()
    try:
        yield caught
    except WorkbenchError as exc:
        caught.error = exc
        show_error(exc)
        if stop:
            st.stop()


# ---------------------------------------------------------------- progress

@contextmanager
def progress(text: str = "starting"):
    """A progress bar while the block runs; yields the `progress=` callback library functions take
    (fraction in [0, 1], message). The bar goes when the block ends, however it ends."""
    bar = st.progress(0.0, text=text)

    def report(fraction: float, message: str | None = None) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message or text)

    try:
        yield report
    finally:
        bar.empty()


# ---------------------------------------------------------------- the dataset-version picker

def _pending_key(prefix: str) -> str:
    return f"{prefix}pick_next"


def show_next(prefix: str, dataset: str, number: int) -> None:
    """Make the page's picker show this version on the next run (after an import or a commit)."""
    st.session_state[_pending_key(prefix)] = (dataset, number)


def version_label(number: int, newest: int) -> str:
    return f"v{number} (newest)" if number == newest else f"v{number}"


def version_picker(store, prefix: str, *, columns=None, dataset_help: str, version_help: str =
                   "Versions never change; every import or derived dataset adds a new one.",
                   on_change=None, empty: str | None = None):
    """Dataset and version select boxes (keys `{prefix}dataset` and `{prefix}version::{dataset}`); returns
    the chosen Version, or None when the project has no datasets (with `empty` as an info line)."""
    names = [d["name"] for d in versions.list_datasets(store)]
    if not names:
        if empty:
            st.info(empty, icon=":material/info:")
        return None
    dataset_key = f"{prefix}dataset"
    pending = st.session_state.pop(_pending_key(prefix), None)
    if pending and pending[0] in names:
        st.session_state[dataset_key] = pending[0]
        st.session_state[f"{prefix}version::{pending[0]}"] = pending[1]
    left, right = columns or st.columns([3, 1])
    dataset = left.selectbox("Dataset", names, key=dataset_key, on_change=on_change, help=dataset_help)
    numbers = [v.number for v in reversed(versions.list_versions(store, dataset))]
    number = right.selectbox("Version", numbers, key=f"{prefix}version::{dataset}", on_change=on_change,
                             format_func=lambda n: version_label(n, numbers[0]), help=version_help)
    return versions.get_version(store, f"{dataset}@{number}")


# ---------------------------------------------------------------- words and tables

def plural(n: int, noun: str, many: str | None = None) -> str:
    """'1 row', '2 rows', '1,204 duplicate groups' (`many` for irregular plurals)."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"


def table(data, **kwargs):
    """st.dataframe without the index, and missing values as empty cells rather than 'None'."""
    kwargs.setdefault("hide_index", True)
    return st.dataframe(data, placeholder="", **kwargs)


# ---------------------------------------------------------------- chart axes

ROW_HEIGHT = 22  # pixels per category on a category axis: every label fits


def category_axis(**kwargs) -> alt.Axis:
    """An axis of categories that shows every label in full (Vega-Lite drops overlapping labels and
    cuts long ones by default)."""
    return alt.Axis(labelOverlap=False, labelLimit=kwargs.pop("labelLimit", 320), **kwargs)


def count_axis(**kwargs) -> alt.Axis:
    """An axis of counts: whole-number ticks only."""
    return alt.Axis(tickMinStep=1, format=kwargs.pop("format", ",d"), **kwargs)


def count_legend(**kwargs) -> alt.Legend:
    """A colour legend of counts: whole numbers only."""
    return alt.Legend(format=",d", tickMinStep=1, **kwargs)


def step(per_category: int = ROW_HEIGHT) -> alt.Step:
    """Chart height (or width) per category, so that each gets room for its label (per category even
    when bars of several series sit side by side within it)."""
    return alt.Step(per_category, **{"for": "position"})
