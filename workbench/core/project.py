"""Where a project lives on disk: the folder, its config and its sub-folders."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import WorkbenchError

DEFAULT_DIR = "workbench-data"
DB_FILE = "workbench.duckdb"
CONFIG_FILE = "workbench.toml"
DEFAULT_CONFIG = """\
# Workbench project settings.
[project]
name = "{name}"

[import]
# Largest single field accepted on import, in megabytes.
max_field_mb = 1.0
"""


@dataclass(frozen=True)
class Project:
    """A project folder: `workbench.duckdb`, `workbench.toml`, `runs/`, `models/`."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def data_dir(self) -> Path:
        """Parquet files of the dataset versions, one folder per version."""
        return self.root / "data"

    @property
    def cache_dir(self) -> Path:
        """Derived facts about a version (duplicate clusters, flags, token counts) that can be rebuilt;
        name files after the version id and content hash so a stale file is never read."""
        return self.root / "cache"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def exists(self) -> bool:
        return self.db_path.exists()

    def config(self) -> dict:
        if not self.config_path.exists():
            return {}
        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkbenchError(f"{self.config_path}: not valid TOML ({exc}); fix or delete the file") from None

    def setting(self, section: str, key: str, default):
        return self.config().get(section, {}).get(key, default)


def project_dir(arg: str | os.PathLike | None = None) -> Path:
    """The project folder: --project, else WORKBENCH_PROJECT, else ./workbench-data."""
    return Path(arg or os.environ.get("WORKBENCH_PROJECT") or DEFAULT_DIR).expanduser().resolve()


def init_project(path: str | os.PathLike | None = None) -> Project:
    """Create the folder layout and config (idempotent); the store creates the database."""
    root = project_dir(path)
    if root.exists() and not root.is_dir():
        raise WorkbenchError(f"{root} exists and is not a folder; choose another --project")
    project = Project(root)
    for folder in (root, project.data_dir, project.runs_dir, project.models_dir, project.uploads_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if not project.config_path.exists():
        project.config_path.write_text(DEFAULT_CONFIG.format(name=root.name.replace('"', "")), encoding="utf-8")
    return project


def open_project(path: str | os.PathLike | None = None, *, create: bool = True) -> Project:
    """The project at path; created when missing and create is true."""
    root = project_dir(path)
    project = Project(root)
    if not project.exists():
        if not create:
            raise WorkbenchError(f"no project at {root}; run `workbench init --project {root}` first")
        return init_project(root)
    return project
