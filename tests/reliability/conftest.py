"""The corpus, made once per session, and the summary of what finishline did with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.corpus import CASES, generate

SUMMARY = "reliability-summary.json"
_outcomes: dict[str, dict[str, object]] = {}
_written: list[Path] = []


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def outcomes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Each case's outcome, recorded by the test; written to ``reliability-summary.json`` in
    pytest's base temporary folder at the end of the session."""
    yield _outcomes
    if _outcomes:
        path = tmp_path_factory.getbasetemp() / SUMMARY
        path.write_text(json.dumps(summarise(_outcomes), indent=2) + "\n")
        _written.append(path)


def summarise(outcomes: dict[str, dict[str, object]]) -> dict[str, object]:
    results = [outcomes[c.name] for c in CASES if c.name in outcomes]
    errors = [r for r in results if r["expect"] == "error"]
    return {
        "cases": len(results),
        "clear_errors": sum(r["outcome"] == "clear error" for r in results),
        "delivered": sum(r["outcome"] == "delivered" for r in results),
        "failures": sum(r["outcome"] not in ("clear error", "delivered") for r in results),
        "known_failures": sum(
            bool(r.get("known")) and r["outcome"] not in ("clear error", "delivered")
            for r in results
        ),
        "crashes": sum(bool(r["crash"]) for r in results),
        "hangs": sum(r["outcome"] == "hang" for r in results),
        "clear_error_rate": (
            round(sum(r["outcome"] == "clear error" for r in errors) / len(errors), 3)
            if errors
            else None
        ),
        "results": results,
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not _outcomes:
        return
    s = summarise(_outcomes)
    tr = terminalreporter
    tr.section("reliability corpus")
    for r in s["results"]:  # type: ignore[union-attr]
        known = "[known] " if r.get("known") else ""
        tr.write_line(f"{r['case']:30} {r['expect']:5} {r['outcome']:12} {known}{r['detail']}")
    tr.write_line(
        f"{s['cases']} cases: {s['clear_errors']} clear errors, {s['delivered']} delivered, "
        f"{s['failures']} failures ({s['known_failures']} known, {s['crashes']} crashes, "
        f"{s['hangs']} hangs)"
    )
    for path in _written:
        tr.write_line(f"summary: {path}")
