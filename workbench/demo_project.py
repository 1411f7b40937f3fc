"""`workbench demo`: a project with the synthetic support tickets already imported."""

from __future__ import annotations

from workbench.demo import make_demo_files
from workbench.errors import WorkbenchError
from workbench.importer import import_file
from workbench.project import init_project
from workbench.store import Store
from workbench.versions import get_version

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
    return {"project": str(project.root), "dataset": DEMO_DATASET, "version": version.number,
            "records": version.row_count, "files": {k: str(v) for k, v in files.items()}}
