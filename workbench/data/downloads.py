"""Exports as a browser download: the Datasets page's Export section writes a version with
`workbench.data.export.export_version` (the same code as `workbench export`) into a temporary folder and
hands the bytes to the browser; a Hugging Face datasets folder travels as one zip file."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

from workbench.core.store import Store
from workbench.core.versions import Version
from workbench.data.export import export_version

SUFFIX = {"csv": ".csv", "parquet": ".parquet", "hf": ".zip"}
MIME = {".csv": "text/csv", ".parquet": "application/octet-stream", ".zip": "application/zip",
        ".jsonl": "application/jsonl"}


def download_name(version: Version, fmt: str, split: str | None = None) -> str:
    """dataset-v3-chat.jsonl, dataset-v3-test-parquet.parquet, ...: the version, the split and the format."""
    parts = [version.dataset, f"v{version.number}", *([split] if split else []), fmt]
    return "-".join(parts) + SUFFIX.get(fmt, ".jsonl")


def export_bytes(store: Store, version: Version, fmt: str, *, split: str | None = None,
                 redact: tuple[str, ...] | None = None, progress=None, user=None) -> tuple[str, bytes, str, dict]:
    """(file name, content, MIME type, export_version's result) of one export as a single file."""
    name = download_name(version, fmt, split)
    with tempfile.TemporaryDirectory(prefix="wb-export-") as tmp:
        target = Path(tmp) / (name[:-4] if fmt == "hf" else name)
        result = export_version(store, version, fmt, target, split=split, redact=redact, progress=progress,
                                user=user)
        if fmt == "hf":  # a folder (arrow files, dataset_info.json): zipped under its own name
            data = zip_folder(target)
        else:
            data = target.read_bytes()
    return name, data, MIME[Path(name).suffix], result


BROWSER_LIMIT = 1 << 30  # bigger folders are not offered as a download (the browser's copy is held in memory)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def zip_folder(folder: Path) -> bytes:
    """The folder as one zip file, its files under the folder's own name (unzips to the folder); weights and
    other binary files are stored, text is deflated."""
    folder = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                packed = path.suffix in (".safetensors", ".gguf", ".bin", ".pt", ".arrow", ".parquet")
                z.write(path, os.path.relpath(path, folder.parent),
                        compress_type=zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
