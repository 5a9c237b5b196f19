"""Dependency direction: app -> daemon -> vs_scripts; the pure core imports only the stdlib."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "vs_scripts.plan.preset",
    "vs_scripts.plan.media",
    "vs_scripts.plan.render",
    "vs_scripts.plan.cadence",
    "daemon.engine.commands",
    "daemon.engine.checks",
    "daemon.runtime.states",
    "daemon.runtime.config",
]
FIRST_PARTY = ("app", "daemon", "vs_scripts", "tests")


def loaded_modules(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_only_stdlib(module: str) -> None:
    third_party = {
        m.split(".")[0]
        for m in loaded_modules(module)
        if m.split(".")[0] not in sys.stdlib_module_names
        and not m.startswith(FIRST_PARTY)
        and not m.startswith("_")
    }
    assert not third_party, f"{module} pulls in {sorted(third_party)}"


@pytest.mark.parametrize(
    "module", ["daemon.engine.pipeline", "daemon.engine.presets", "daemon.core.probe"]
)
def test_daemon_never_imports_textual_or_app(module: str) -> None:
    mods = loaded_modules(module)
    assert not any(m == "textual" or m.startswith(("textual.", "app")) for m in mods)


def test_vs_scripts_pure_parts_do_not_import_daemon() -> None:
    mods = loaded_modules("vs_scripts.plan.render")
    assert not any(m.startswith(("daemon", "app")) for m in mods)
