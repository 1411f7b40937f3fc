"""`workbench demo`: a project with the synthetic support tickets already imported."""

from __future__ import annotations

from workbench.core.errors import WorkbenchError
from workbench.core.project import init_project
from workbench.core.store import Store
from workbench.core.versions import get_version
from workbench.data.demo import make_demo_files
from workbench.data.importer import import_file

DEMO_DATASET = "support-tickets"


def make_demo_project(project_dir=None, *, records: int = 2000, seed: int = 7) -> dict:
    """Write the demo files into the project's uploads/demo and import the tickets once."""
    project = init_project(project_dir)
    files = make_demo_files(project.uploads_dir / "demo", n=records, seed=seed)
    with Store(project) as store:
        try:
            version = get_version(store, DEMO_DATASET)
        except WorkbenchError:
            version = import_file(store, files["tickets"], DEMO_DATASET).version
        load_demo_annotations(store, files["annotations"])
    return {"project": str(project.root), "dataset": DEMO_DATASET, "version": version.number,
            "records": version.row_count, "files": {k: str(v) for k, v in files.items()}}


DEMO_QUESTIONS = {
    "category": dict(kind="single-choice", overlap=3, guidelines=(
        "Choose the **one** category that says what the customer needs.\n\n"
        "- A parcel that is late or lost is `shipping`, even when they also ask for money back.\n"
        "- Money back for something that arrived is `refund`.\n- A broken product is `product_defect`.")),
    "urgency": dict(kind="rating", overlap=2, anchors={"1": "can wait", "3": "today", "5": "right now"},
                    guidelines="How soon must support answer? 1 = can wait a week, 5 = answer right now."),
}


def load_demo_annotations(store: Store, path) -> None:
    """The demo annotators' labels as the questions `category` and `urgency` (once)."""
    from workbench.labels.annotations import import_annotations
    from workbench.labels.questions import list_questions, update_question

    have = {q.name for q in list_questions(store, DEMO_DATASET)}
    for name, spec in DEMO_QUESTIONS.items():
        if name in have:
            continue
        import_annotations(store, path, dataset=DEMO_DATASET, question=name, item_col="item_id",
                           annotator_col="annotator", value_col="value", kind=spec["kind"], overlap=spec["overlap"])
        update_question(store, DEMO_DATASET, name, guidelines=spec["guidelines"], anchors=spec.get("anchors"))
