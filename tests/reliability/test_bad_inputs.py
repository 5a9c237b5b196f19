"""Every corpus case through ``finishline process``: odd but valid media is delivered, the rest
is refused with one clear line; never a traceback, never a hang, the source never touched,
nothing half-written left beside the output.

The figures (cases, clear errors, delivered, failures) are printed at the end of the run and
written to ``reliability-summary.json`` in pytest's base temporary folder.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.helpers import BIN, digest
from tests.reliability.corpus import CASES, ERROR, OK, Case

TIMEOUT_S = 120.0
"""Per case: a tiny clip finishes in seconds, so anything near this is a hang."""

ERROR_PREFIX = "finishline: error: "


def _params() -> list[object]:
    """One test per case; a known failure is expected to fail (strict: once fixed, the mark
    must go)."""
    out = []
    for c in CASES:
        marks: list[pytest.MarkDecorator] = [pytest.mark.slow] if c.slow else []
        if c.known:
            marks.append(pytest.mark.xfail(reason=c.known, strict=True))
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def run_finishline(args: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """``finishline ARGS`` in its own process group; on a timeout the whole group (vspipe,
    ffmpeg) is killed and the exit code is ``None``."""
    proc = subprocess.Popen(
        [str(BIN / "finishline"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err
    return proc.returncode, err


def leftovers(folder: Path) -> list[str]:
    """Hidden or partial files: what a failed or interrupted run must never leave behind."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or "partial" in p.name)


def judge(
    case: Case, src: Path, out: Path, code: int | None, stderr: str, before: str | None
) -> tuple[str, str, bool]:
    """(outcome, detail, crashed). Outcomes: "delivered" and "clear error" are passes."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    crashed = "Traceback" in stderr or (code is not None and code not in (0, 1))
    problems = []
    if before is not None and (not src.is_file() or digest(src) != before):
        problems.append("the source changed")
    if left := leftovers(out.parent):
        problems.append(f"left behind: {left}")
    if code is None:
        return "hang", f"no result after {TIMEOUT_S:.0f}s", crashed
    if crashed:
        last = lines[-1] if lines else ""
        return "crash", f"exit {code}: {last[:300]}", True
    if case.expect == OK:
        if code != 0:
            return "failure", (errors[-1] if errors else (lines[-1] if lines else ""))[:400], False
        if not out.is_file() or out.stat().st_size == 0:
            problems.append("exit 0 but no output")
        if problems:
            return "failure", "; ".join(problems), False
        return "delivered", "", False
    # ERROR expected
    if code == 0:
        return "failure", "delivered, but it should have been refused", False
    if len(errors) != 1 or len(lines) != 1:
        problems.append(f"expected one error line, got {len(lines)} lines")
    msg = errors[-1][len(ERROR_PREFIX) :] if errors else (lines[-1] if lines else "")
    if src.name not in msg:
        problems.append("the error does not name the file")
    if not re.search(case.pattern, msg):
        problems.append(f"unclear error (want /{case.pattern}/)")
    if out.exists():
        problems.append("an output was written")
    if problems:
        return "failure", f"{'; '.join(problems)}: {msg[:400]}", False
    return "clear error", msg[:400], False


@pytest.mark.parametrize("case", _params())
def test_corpus_case(
    case: Case, corpus: dict[str, Path], outcomes: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    src = corpus[case.name]
    out = tmp_path / "out" / (Path(case.name).stem + ".mp4")
    env = {
        **os.environ,
        "FINISHLINE_PRESETS": str(DATA / "presets_ok"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    before = digest(src) if src.is_file() else None
    t0 = time.monotonic()
    code, stderr = run_finishline(
        ["process", str(src), "--preset", "small-x265", "-o", str(out)], env, TIMEOUT_S
    )
    outcome, detail, crashed = judge(case, src, out, code, stderr, before)
    outcomes[case.name] = {
        "case": case.name,
        "expect": case.expect,
        "description": case.description,
        "outcome": outcome,
        "detail": detail,
        "crash": crashed,
        "known": case.known,
        "seconds": round(time.monotonic() - t0, 1),
    }
    assert "Traceback" not in stderr, stderr
    want = "delivered" if case.expect == OK else "clear error"
    assert outcome == want, f"{case.name} ({case.description}): {outcome}: {detail}\n{stderr}"


def test_corpus_is_big_enough_and_small() -> None:
    """The issue asks for at least 40 cases; each file stays small."""
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert all(c.expect in (OK, ERROR) for c in CASES)
    assert all(c.pattern for c in CASES if c.expect == ERROR)


def test_corpus_files_are_small(corpus: dict[str, Path]) -> None:
    sizes = {name: p.stat().st_size for name, p in corpus.items() if p.is_file()}
    assert max(sizes.values()) <= 200 * 1024, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
