"""Writing and enabling the systemd user unit (``finishline service install``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from daemon.core.files import atomic_write
from daemon.core.places import shipped, user_config_base
from daemon.runtime.config import default_config_path, load_config
from vs_scripts.plan.errors import AppError

TEMPLATE = shipped("systemd") / "finishline.service"


def render_user_unit(finishline: str, config: Path, root: Path) -> str:
    text = TEMPLATE.read_text()
    text = text.replace("@FINISHLINE@", finishline).replace("@CONFIG@", str(config))
    # the user unit can protect the system too: everything read-only but the daemon's root
    extra = f"ProtectSystem=strict\nReadWritePaths={root} {Path.home() / '.cache'}\n"
    return text.replace("PrivateTmp=yes\n", "PrivateTmp=yes\n" + extra)


def install_user_unit(*, config: Path | None = None, enable: bool = True) -> Path:
    config = (config or default_config_path()).resolve() if config else default_config_path()
    cfg = load_config(config, write_default=True)
    cfg.root.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "finishline"
    if not exe.exists():
        exe = Path(shutil.which("finishline") or exe)
    base = user_config_base()
    unit = base / "systemd" / "user" / "finishline.service"
    atomic_write(unit, render_user_unit(str(exe), config, cfg.root))
    if enable:
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
    return unit
