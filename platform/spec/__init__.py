"""Stage 1, the spec: the suite YAML as typed blocks, validated against the plugins (and the search block)
on the driver before anything is written; every error names the file, the field and the value."""
