"""Per-version Parquet files of the Inspect checks (token counts, quality flags, PII hits).

A version never changes, so what a check found about it can be kept: each file is named after
the version id, its content hash and the settings that shaped the result, is written aside and
renamed into place (never half-written), and is keyed by `_row` so browse filters can join on it.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench.core import files
from workbench.core.store import Store, quote_literal
from workbench.core.versions import Version


def cache_path(store: Store, version: Version, kind: str, tag: str = "") -> Path:
    """cache/<kind>_v<id>_<hash16>[_<tag>].parquet; the tag names the settings (tokenizer, rules)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", tag).strip("-")
    name = f"{kind}_v{version.version_id}_{version.content_hash[:16]}" + (f"_{tag}" if tag else "")
    return store.project.cache_dir / f"{name}.parquet"


def copy_query(cur, sql: str, path: Path, params=None) -> Path:
    """Write a query's result to path atomically (DuckDB COPY to a side file, then rename)."""
    with files.atomic_path(path) as tmp:
        cur.execute(f"COPY ({sql}) TO {quote_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)", params or [])
    return path


def parquet_sql(path: Path) -> str:
    """A FROM clause reading one cache file."""
    return f"read_parquet({quote_literal(str(path))})"
