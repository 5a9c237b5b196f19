"""Finding, loading and saving preset files (the I/O around :mod:`vs_scripts.plan.preset`)."""

from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path

import tomli_w

from daemon.core.files import atomic_write
from daemon.core.places import shipped, xdg_dir
from vs_scripts.plan.errors import AppError, PresetError
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
        try:
            files = sorted(d.glob("*.toml")) if d.is_dir() else []
        except OSError:  # a folder we may not read holds no preset we could load
            continue
        for f in files:
            found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


MAX_PRESET_BYTES = 1 << 20


def load_preset_file(path: Path) -> Preset:
    """Read and validate one preset file. Every failure is one :class:`AppError` naming the
    file: a :class:`PresetError` when the file was read but is no valid preset."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a folder, or a FIFO that would block
            raise AppError(f"{path}: cannot read preset (it is not a regular file).")
        with path.open("rb") as f:
            data = f.read(MAX_PRESET_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AppError(f"{path}: cannot read preset ({reason}).") from None
    if len(data) > MAX_PRESET_BYTES:
        raise PresetError([f"{path}: the file is over 1 MiB, too large to be a preset."])
    body = data.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark Notepad writes
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise PresetError(
            [f"{path}: the file is not UTF-8 text (line {line}); save it as UTF-8."]
        ) from None
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


def _check_name(path: Path) -> None:
    if not NAME_RE.match(path.stem):
        raise AppError(
            f"{path.name}: preset names use lowercase letters, digits, '.', '_' and '-'."
        )


def save_preset_text(text: str, path: Path) -> Preset:
    """Write the user's TOML ``text`` exactly as it is (comments, key order, spacing), once it
    loads as a valid preset named after ``path``; atomically (temporary file, then rename)."""
    _check_name(path)
    preset = load_preset(text, source=str(path), name=path.stem)  # never write what will not load
    atomic_write(path, text)
    return preset


def save_preset(preset: Preset, path: Path) -> None:
    """Write a :class:`Preset` made in code with tomli-w (every key written out). To save what
    a user edited, keep their text: :func:`save_preset_text`."""
    save_preset_text(tomli_w.dumps(preset_to_dict(preset)), path)
