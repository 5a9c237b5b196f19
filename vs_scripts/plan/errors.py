"""Error classes shared by every layer. Library code raises; only the CLI and the TUI catch."""

from __future__ import annotations


class AppError(Exception):
    """An error with a one-sentence message for the user and a short title."""

    title = "finishline error"

    def __init__(self, msg: str, *, title: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return self.msg


class PresetError(AppError):
    """A preset failed validation; ``problems`` lists every problem found."""

    title = "invalid preset"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        head = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"preset has {head}:\n  - " + "\n  - ".join(problems))


class ScriptError(AppError):
    """A VapourSynth script could not be rendered or run."""

    title = "script error"
