"""The Preference data section of the Review page's Results: turn this review's judgements into a dataset for
DPO (pairs) or KTO (unpaired examples), one click (workbench.models.review_preferences)."""

from __future__ import annotations

import streamlit as st

import wb_ui
from workbench.core.errors import WorkbenchError
from workbench.models import review_preferences as P

RULE_TEXT = {"majority": "Majority vote (pairs where most judgements agree)",
             "gap": "Rating gap (pairs of answers rated far apart)",
             "kto": "Threshold (KTO: good and bad answers, unpaired)"}


def preferences_section(store, rv, user) -> None:
    if not user.can("write_version"):
        return
    st.subheader("Preference data for DPO or KTO")
    rules = ["majority"] if rv.kind == "pairwise" else ["gap", "kto"]
    key = f"rv_pref::{rv.review_id}"
    left, mid, right = st.columns(3)
    rule = left.selectbox("Rule", rules, format_func=RULE_TEXT.get, key=f"{key}::rule",
                          help="How judgements become training data: ties, split votes and answers too close to "
                               "call are left out and counted.")
    settings: dict = {}
    if rule == "gap":
        settings["min_gap"] = mid.number_input("Least rating gap", 0.5, 4.0, 2.0, 0.5, key=f"{key}::gap",
                                               help="Two answers to one item make a pair when their mean "
                                                    "ratings differ by at least this much.")
    elif rule == "kto":
        settings["threshold"] = mid.number_input("Threshold", 1.0, 5.0, 3.0, 0.5, key=f"{key}::threshold",
                                                 help="Mean ratings above it are desirable answers, below it "
                                                      "undesirable; answers exactly at it are left out.")
    if rule != "majority":
        settings["question"] = mid.selectbox("Question", list(rv.question_names), key=f"{key}::question",
                                             help="The rating question whose answers are read.")
    out = right.text_input("Dataset to write", f"review-{rv.review_id}-{rule}", key=f"{key}::out",
                           help="The pairs (or examples) become a new version of this dataset; its recipe names "
                                "this review, the rule and the counts.")
    if st.button("Write the preference dataset", key=f"{key}::go", icon=":material/thumbs_up_down:",
                 help="Build the pairs from the current judgements and write them as a new version."):
        try:
            with st.spinner("Building the pairs…"):
                result = P.write_preferences(store, rv, rule=rule, out=out.strip(), user=user, **settings)
        except WorkbenchError as exc:
            wb_ui.show_error(exc)
        else:
            st.success(wb_ui.safe_markdown(P.describe(result)), icon=":material/check_circle:")
            st.page_link("page_train.py", label="Train with DPO or KTO on it", icon=":material/model_training:")
