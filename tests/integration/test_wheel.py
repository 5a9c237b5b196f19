"""A non-editable install works: the wheel carries the presets, the TUI stylesheet and the
systemd unit template, and the commands find them from the installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel --no-deps`` of a copy of the tracked tree (so the checkout stays clean)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    out = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("finishline-*.whl")
    return found


def test_the_wheel_holds_presets_styles_and_units(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.name for p in (ROOT / "presets").glob("*.toml")}
    assert {f"daemon/_shipped/presets/{n}" for n in presets} <= names
    assert "app/app.tcss" in names
    assert {"daemon/_shipped/systemd/finishline.service"} <= names
    assert "daemon/_shipped/systemd/finishline@.service" in names


def test_commands_work_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    env.pop("FINISHLINE_PRESETS", None)

    def run(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        return res.stdout

    where = run(
        "-c", "import app, daemon.core.places as p; print(app.__file__, p.shipped('presets'))"
    )
    assert where.split()[0].startswith(str(site)) and where.split()[1].startswith(str(site))
    listed = run("-m", "app", "presets", "list")
    assert "youtube-1080p" in listed and "master-4k-prores" in listed
    css = run(
        "-c",
        "import app.tui as t, pathlib; "
        "print(pathlib.Path(t.__file__).parent / t.FinishlineApp.CSS_PATH)",
    )
    assert Path(css.strip()).is_file() and Path(css.strip()).is_relative_to(site)
    unit = Path(run("-m", "app", "service", "install", "--no-enable").strip())
    assert unit.is_file() and unit.is_relative_to(tmp_path / "config")
    text = unit.read_text()
    assert "ExecStart=" in text and "@FINISHLINE@" not in text
