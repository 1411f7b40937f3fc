"""The library itself refuses what a role may not do, whatever page or script calls it."""
import pytest

from tests.conftest import write_jsonl
from trainers.config import TrainConfig
from workbench.core.auth import PermissionDenied, User
from workbench.core.versions import list_versions
from workbench.curation import balance, splits
from workbench.data.export import export_version
from workbench.data.importer import import_file
from workbench.models import runs

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


def dup_version(store, tmp_path):
    rows = [{"prompt": "same question", "completion": "same answer"}] * 3 + [{"prompt": "other", "completion": "x"}]
    return import_file(store, write_jsonl(tmp_path / "d.jsonl", rows), "dups").version


@pytest.mark.parametrize("user", [ANNOTATOR, REVIEWER])
def test_dedup_pii_and_runs_refuse_other_roles(store, tmp_path, user):
    from workbench.inspect import dedup, pii

    source = dup_version(store, tmp_path)
    before = len(list_versions(store))
    with pytest.raises(PermissionDenied, match="may not write version"):
        dedup.resolve(store, source, near=False, user=user)
    with pytest.raises(PermissionDenied, match="may not write version"):
        pii.redact_version(store, source, "clean", user=user)
    with pytest.raises(PermissionDenied, match="may not train"):
        runs.start_run(store, "any-run", user=user)  # refused before the run is even looked up
    with pytest.raises(PermissionDenied, match="may not train"):
        runs.cancel_run(store, "any-run", user=user)
    assert len(list_versions(store)) == before


def test_dedup_and_pii_write_for_an_admin(store, tmp_path):
    from workbench.inspect import dedup, pii

    source = dup_version(store, tmp_path)
    new, info = dedup.resolve(store, source, near=False, user=ADMIN, created_by="ada")
    assert info["dropped"] == 2 and new.row_count == 2
    assert pii.redact_version(store, source, "clean", user=ADMIN)[0].row_count == 4


def test_a_signed_out_annotator_cannot_answer(store, tmp_path, version):
    """The write itself checks the session: a Label tab left open after sign-out saves nothing."""
    from workbench.core import auth
    from workbench.labels import annotations, questions

    auth.add_user(store, "ada", "admin", "long enough password")
    ann = auth.add_user(store, "ann", "annotator", "long enough password")
    question = questions.add_question(store, version, "category", "single-choice", choices=["a", "b"], overlap=1)
    token = auth.start_session(store, ann)
    signed_in = auth.session_user(store, token)
    item = annotations.next_item(store, question, signed_in)
    auth.end_session(store, token)
    with pytest.raises(auth.SessionEnded):
        annotations.submit(store, question, item, "a", user=signed_in)
    assert len(annotations.my_answers(store, question, ann)) == 0
