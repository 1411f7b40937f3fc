"""A tiny Streamlit script that draws only the Duplicates section (pages/inspect_duplicates.render),
for tests/pages/test_dedup_page.py. The dataset comes from the WORKBENCH_DEDUP_DATASET variable."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pages"))

import inspect_duplicates  # noqa: E402
import wb_ui  # noqa: E402
from workbench.core.versions import get_version  # noqa: E402

store = wb_ui.get_store()
inspect_duplicates.render(store, get_version(store, os.environ.get("WORKBENCH_DEDUP_DATASET", "d")))
