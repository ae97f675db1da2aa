"""One exception family: the CLI prints its message as one line and exits non-zero."""


class SegarenaError(Exception):
    """A user-facing error whose message names the file, field or value at fault."""


class PluginError(SegarenaError):
    """A plugin is missing, duplicated, fails to import or breaks the contract."""


class SpecError(SegarenaError):
    """A suite spec is malformed."""


class DataError(SegarenaError):
    """A dataset's files are missing, unreadable or inconsistent."""
