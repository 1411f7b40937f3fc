"""User-facing errors: the CLI prints their message on one line, never a traceback."""


class WorkbenchError(Exception):
    """A problem the user can fix; the message says what to do next."""


class StoreBusy(WorkbenchError):
    """The project's database is held by another process (DuckDB lets one process open it)."""
