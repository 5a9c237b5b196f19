"""Writing and enabling the systemd user unit (``finishline service install``).

The installed unit is the shipped template with its ``@NAME@`` placeholders filled in and
nothing else, so the file that ``systemd-analyze security`` rates in the repository is the one
that runs. docs/systemd.md explains the hardening.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from daemon.core.files import atomic_write
from daemon.core.places import shipped, user_config_base, xdg_dir
from daemon.engine.models import model_dir
from daemon.runtime.config import default_config_path, load_config
from vs_scripts.plan.errors import AppError

TEMPLATE = shipped("systemd") / "finishline.service"
# present in a source checkout and an editable install; a wheel does not carry docs/
DOCS = shipped("systemd").parent / "docs" / "systemd.md"
PLACEHOLDER = re.compile(r"@([A-Z]+)@")
# characters a unit file takes bare; anything else is quoted (and '%' doubled, see _quote)
BARE = re.compile(r"[A-Za-z0-9/._+:,=~%-]*")


def _quote(value: str) -> str:
    """``value`` as one word of a unit-file setting: specifiers escaped (``%`` -> ``%%``), and
    double-quoted with C escapes when it has spaces or quotes. A control character would end
    the line and start a new directive, and ``ExecStart=`` expands ``$``, so both are refused."""
    if "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise AppError(
            f"{value!r} holds a '$' or a control character, which a systemd unit cannot carry; "
            "choose a path without one."
        )
    value = value.replace("%", "%%")
    if BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_user_unit(values: dict[str, str]) -> str:
    """The template with every ``@NAME@`` replaced by ``values[NAME]`` (quoted for systemd);
    a placeholder without a value is refused, so a half-filled unit is never written."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise AppError(f"{TEMPLATE}: placeholder @{name}@ has no value to fill in.")
        return values[name] if name == "DOCS" else _quote(values[name])

    return PLACEHOLDER.sub(fill, TEMPLATE.read_text(encoding="utf-8"))


def docs_uri() -> str:
    """A ``file:`` URI for docs/systemd.md when it exists here, else nothing (the unit's
    ``Documentation=`` then names only the systemd manual)."""
    return DOCS.resolve().as_uri().replace("%", "%%") if DOCS.is_file() else ""


def finishline_exe() -> Path:
    exe = Path(sys.executable).parent / "finishline"
    return exe if exe.exists() else Path(shutil.which("finishline") or exe)


def _absolute(path: Path, what: str) -> Path:
    if not path.is_absolute():
        raise AppError(f"{what} {str(path)!r} is relative; the service needs an absolute path.")
    return path


def unit_values(config: Path) -> dict[str, str]:
    """What the template's placeholders stand for, with the folders the unit makes writable
    created now (``ReadWritePaths=`` refuses to start the unit if one is missing)."""
    cfg = load_config(config, write_default=True)
    writable = {
        "ROOT": _absolute(cfg.root, f"{config}: root ="),
        "CACHE": _absolute(xdg_dir("cache").parent, "$XDG_CACHE_HOME"),
        "MODELS": _absolute(model_dir(), "the model folder"),
    }
    for folder in writable.values():
        folder.mkdir(parents=True, exist_ok=True)
    values = {name: str(path) for name, path in writable.items()}
    values.update(FINISHLINE=str(finishline_exe()), CONFIG=str(config), DOCS=docs_uri())
    return values


def install_user_unit(*, config: Path | None = None, enable: bool = True) -> Path:
    config = config.expanduser().resolve() if config else default_config_path()
    unit = user_config_base() / "systemd" / "user" / "finishline.service"
    atomic_write(unit, render_user_unit(unit_values(config)))
    if enable:
        _enable(unit)
    return unit


def _enable(unit: Path) -> None:
    if not shutil.which("systemctl"):
        raise AppError(f"wrote {unit}, but systemctl is not available to enable it.")
    for cmd in (
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "finishline.service"],
    ):
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AppError(
                f"wrote {unit}, but `{' '.join(cmd)}` failed ({res.stderr.strip()}); "
                "is a user session bus running (loginctl enable-linger $USER)?"
            )
