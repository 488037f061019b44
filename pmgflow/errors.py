"""User-facing errors: one clear message, no traceback, CLI exit code 2."""


class PmgflowError(Exception):
    """An error the user can fix (bad spec, missing file, corrupt data); the CLI prints it and exits 2."""


class SpecError(PmgflowError):
    """A spec file failed to load or validate."""


class DataError(PmgflowError):
    """A dataset or image source is missing, empty or unreadable."""
