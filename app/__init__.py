"""The user-facing layer: the ``finishline`` CLI and (later) the Textual TUI."""
