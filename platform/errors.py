"""One exception family: the CLI prints its message as one line and exits non-zero."""


class SegarenaError(Exception):
    """A user-facing error whose message names the file, field or value at fault."""

    exit_code = 2  # bad input: nothing was recorded


class PluginError(SegarenaError):
    """A plugin is missing, duplicated, fails to import or breaks the contract."""


class SpecError(SegarenaError):
    """A suite spec is malformed."""


class DataError(SegarenaError):
    """A dataset's files are missing, unreadable or inconsistent."""


class StoreError(SegarenaError):
    """The tracking store failed to answer or holds a broken run; the message names the run and artifact."""

    exit_code = 1
