"""User-facing errors: str() is the whole message (the file, what is wrong, the fix); the CLI prints it
as one line and exits 2 instead of showing a traceback."""


class DataError(ValueError):
    """A dataset problem: missing, corrupt or malformed input."""


class RunRefused(ValueError):
    """A run that will not start as asked: a stale result without --force, no GPU where one was asked."""


class StorageError(ValueError):
    """A results or checkpoint location that cannot take the run: not a folder, read-only, full."""
