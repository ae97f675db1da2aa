"""The plugin API version, importable without torch (``segarena --version`` and the run keys read it)."""

API_VERSION = 1
