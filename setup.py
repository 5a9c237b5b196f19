"""Packs the top-level ``presets/`` and ``systemd/`` folders (their single source) into the
wheel as ``daemon/_shipped/``, where :func:`daemon.core.places.shipped` finds them. An
editable install reads the repository's folders directly."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"presets": "*.toml", "systemd": "*.service"}


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in SHIPPED.items():
            dest = Path(self.build_lib) / "daemon" / "_shipped" / folder
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(Path(folder).glob(pattern)):
                shutil.copy2(f, dest / f.name)


setup(cmdclass={"build_py": BuildWithShipped})
