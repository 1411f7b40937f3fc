"""workbench.core.files: a file appears whole or not at all, and a failed write leaves no trace."""

import threading

import pytest

from workbench.core import files


def test_a_write_appears_only_when_it_is_done(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with files.atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_text(encoding="utf-8") == "half"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_side_file(tmp_path):
    target = files.write_json(tmp_path / "run.json", {"status": "running"})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("{broken", encoding="utf-8")
        raise RuntimeError("killed half way")
    assert target.read_text(encoding="utf-8") == '{\n  "status": "running"\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_replace_false_refuses_an_existing_target(tmp_path):
    target = files.write_text(tmp_path / "a.txt", "first")
    with pytest.raises(FileExistsError), files.atomic_path(target, replace=False) as tmp:
        tmp.write_text("second", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with files.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]


def test_writers_in_threads_never_share_a_side_file(tmp_path):
    target = tmp_path / "stats.txt"
    texts = [str(i) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=files.write_text, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text(encoding="utf-8") in texts  # one writer's whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["stats.txt"]
