"""Finding, loading and saving preset files (the I/O around :mod:`vs_scripts.plan.preset`)."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import tomli_w

from daemon.core.files import atomic_write
from daemon.core.places import shipped, xdg_dir
from vs_scripts.plan.errors import AppError
from vs_scripts.plan.preset import Preset, load_preset, preset_to_dict

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def builtin_dir() -> Path:
    """The ``presets/`` folder shipped with the project."""
    return shipped("presets")


def user_dir() -> Path:
    return xdg_dir("config") / "presets"


def preset_dirs() -> list[Path]:
    """Search order: $FINISHLINE_PRESETS (colon-separated), the user's folder, the built-ins."""
    env = os.environ.get("FINISHLINE_PRESETS")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    return [*dirs, user_dir(), builtin_dir()]


def list_presets(dirs: list[Path] | None = None) -> dict[str, Path]:
    """Preset name -> file; earlier folders shadow later ones."""
    found: dict[str, Path] = {}
    for d in dirs or preset_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def load_preset_file(path: Path) -> Preset:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AppError(f"{path}: cannot read preset ({exc.strerror}).") from None
    return load_preset(text, source=str(path), name=path.stem)


def find_preset(name_or_path: str, dirs: list[Path] | None = None) -> Preset:
    """A preset by name (``youtube-1080p``) or by path to a ``.toml`` file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_preset_file(Path(name_or_path))
    known = list_presets(dirs)
    if name_or_path not in known:
        close = difflib.get_close_matches(name_or_path, list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AppError(
            f"no preset named {name_or_path!r}; available: {', '.join(known) or 'none'}.{hint}"
        )
    return load_preset_file(known[name_or_path])


def save_preset(preset: Preset, path: Path) -> None:
    """Write with tomli-w to a temporary file in the same folder, then rename into place."""
    if not NAME_RE.match(path.stem):
        raise AppError(
            f"{path.name}: preset names use lowercase letters, digits, '.', '_' and '-'."
        )
    data = preset_to_dict(preset)
    text = tomli_w.dumps(data)
    load_preset(text, source=str(path), name=path.stem)  # never write what will not load
    atomic_write(path, text)
