"""Errors raised by the pipeline; the CLI and the daemon turn them into reports."""

from __future__ import annotations

from collections.abc import Sequence

from vs_scripts.plan.errors import AppError, PresetError, ScriptError
from vs_scripts.plan.media import ProbeError

__all__ = [
    "AppError",
    "EncodeError",
    "PresetError",
    "ProbeError",
    "QcError",
    "ScriptError",
    "ToolMissingError",
    "VerifyError",
]


class ToolMissingError(AppError):
    title = "missing tool"


class VerifyError(AppError):
    """The output exists but does not match what was planned; it is not delivered."""

    title = "output failed verification"

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{path}: the output did not pass verification: " + "; ".join(problems) + "."
        )


class QcError(AppError):
    """The output is not what the preset's platform accepts; it is not delivered."""

    title = "output failed QC"

    def __init__(self, report) -> None:  # type: ignore[no-untyped-def]  # daemon.engine.checks.Report
        self.qc = report
        names = ", ".join(f"{c.name} ({c.detail})" for c in report.failures)
        super().__init__(f"{report.file}: failed QC against preset {report.preset}: {names}.")

    def report(self) -> str:
        return self.qc.text()


class EncodeError(AppError):
    """A stage's processes failed. Holds every command, exit code and stderr tail (Av1an's
    ``EncoderCrash``)."""

    title = "encode failed"

    def __init__(
        self,
        stage: str,
        commands: Sequence[Sequence[str]],
        codes: Sequence[int | None],
        tails: Sequence[str],
        hint: str = "",
    ) -> None:
        self.stage = stage
        self.commands = [list(c) for c in commands]
        self.codes = list(codes)
        self.tails = list(tails)
        self.hint = hint
        failed = [
            f"{c[0].rsplit('/', 1)[-1]} exited with {code}"
            for c, code in zip(commands, codes, strict=False)
            if code not in (0, None)
        ]
        last = _last_line(tails)
        msg = f"{stage} failed: {', '.join(failed) or 'a process failed'}"
        if last:
            msg += f" ({last})"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)

    def report(self) -> str:
        import shlex

        parts = [f"stage: {self.stage}"]
        for cmd, code, tail in zip(self.commands, self.codes, self.tails, strict=False):
            parts.append(f"$ {shlex.join(cmd)}\nexit code: {code}\nstderr (last lines):\n{tail}")
        if self.hint:
            parts.append(f"what to try: {self.hint}")
        return "\n\n".join(parts)


def _last_line(tails: Sequence[str]) -> str:
    for tail in tails:
        for line in reversed(tail.strip().splitlines()):
            line = line.strip()
            low = line.lower()
            if (
                line
                and not line.startswith(("Frame:", "Output "))
                and ("error" in low or "failed" in low or "invalid" in low)
            ):
                return line[:300]
    return ""
