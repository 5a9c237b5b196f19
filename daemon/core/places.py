"""Where finishline keeps things: the XDG base directories and the files it ships.

One helper for every lookup, so ``$XDG_CONFIG_HOME``, ``$XDG_CACHE_HOME`` and
``$XDG_DATA_HOME`` are honoured the same way everywhere. Nothing here creates a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

_XDG = {
    "config": ("XDG_CONFIG_HOME", "~/.config"),
    "cache": ("XDG_CACHE_HOME", "~/.cache"),
    "data": ("XDG_DATA_HOME", "~/.local/share"),
}


def xdg_dir(kind: Literal["config", "cache", "data"]) -> Path:
    """``$XDG_<KIND>_HOME/finishline`` (or the XDG default under ``~``)."""
    env, default = _XDG[kind]
    base = os.environ.get(env) or os.path.expanduser(default)
    return Path(base) / "finishline"


def user_config_base() -> Path:
    """``$XDG_CONFIG_HOME`` itself (systemd's user units live under it)."""
    return xdg_dir("config").parent


def shipped(kind: Literal["presets", "systemd"]) -> Path:
    """A folder shipped with finishline: the copy packed into the wheel
    (``daemon/_shipped/KIND``, made by ``setup.py`` at build time) or, in a source checkout and
    an editable install, the repository's top-level ``KIND/``, which is the source of both."""
    here = Path(__file__).resolve().parent.parent
    packed = here / "_shipped" / kind
    return packed if packed.is_dir() else here.parent / kind
