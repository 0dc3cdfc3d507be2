"""A plugin that fails at import: dlpfwd must report it by name and keep running."""

raise RuntimeError("example_broken cannot be imported (on purpose)")
