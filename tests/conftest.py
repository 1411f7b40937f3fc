import json
import os
from pathlib import Path

import pytest

from workbench.core.store import Store

# shared/ sits beside the checkout (../shared from the repository root).
SHARED_DATA = Path(os.environ.get("WORKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BANKING = SHARED_DATA / "banking77"


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "project")
    yield s
    s.close()


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture
def banking_dir():
    if not BANKING.exists():
        pytest.skip(f"banking77 data not found at {BANKING}")
    return BANKING
