"""The library itself refuses what a role may not do, whatever page or script calls it."""
import pytest

from tests.conftest import write_jsonl
from trainers.config import TrainConfig
from workbench.curation import balance
from workbench.models import runs
from workbench.curation import splits
from workbench.core.auth import PermissionDenied, User
from workbench.data.export import export_version
from workbench.data.importer import import_file
from workbench.core.versions import list_versions

ANNOTATOR, REVIEWER, ADMIN = User("ann", "annotator"), User("rev", "reviewer"), User("ada", "admin")


@pytest.fixture
def version(store, tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "category": "ab"[i % 2]} for i in range(20)]
    return import_file(store, write_jsonl(tmp_path / "t.jsonl", rows), "tickets").version


@pytest.mark.parametrize("user", [ANNOTATOR, REVIEWER])
def test_other_roles_are_refused_and_nothing_changes(store, tmp_path, version, user):
    before = len(list_versions(store))
    with pytest.raises(PermissionDenied, match="may not import"):
        import_file(store, write_jsonl(tmp_path / "u.jsonl", [{"prompt": "p", "completion": "c"}]), "more", user=user)
    with pytest.raises(PermissionDenied, match="may not read all"):
        export_version(store, version, "parquet", tmp_path / "out.parquet", user=user)
    plan = balance.plan_balance(store, version, by="category", target="uniform", size=10)
    with pytest.raises(PermissionDenied, match="may not write version"):
        balance.apply_balance(store, plan, "balanced", user=user)
    with pytest.raises(PermissionDenied, match="may not write version"):
        splits.split_version(store, version, "0.5,0.5", user=user)
    with pytest.raises(PermissionDenied, match="may not train"):
        runs.launch(store, "tickets", TrainConfig(max_steps=1), user=user)
    assert len(list_versions(store)) == before
    assert not (tmp_path / "out.parquet").exists()


def test_an_admin_may_and_is_recorded(store, tmp_path, version):
    new = import_file(store, write_jsonl(tmp_path / "u.jsonl", [{"prompt": "p", "completion": "c"}]), "more",
                      user=ADMIN).version
    assert new.created_by == "ada"
    assert export_version(store, version, "parquet", tmp_path / "out.parquet", user=ADMIN)["records"] == 20
    result = splits.split_version(store, version, "0.5,0.5", user=ADMIN)
    assert result.version.created_by == "ada"
