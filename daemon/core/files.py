"""Writing files so that readers never see half of one."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: str | bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def short_name(stem: str, *, limit: int = 150) -> str:
    """``stem`` if its UTF-8 form fits ``limit`` bytes, else its start plus a hash of the whole
    (``start~1a2b3c4d5e``): derived names (reports, work files) stay under the 255-byte limit
    of a file name whatever suffix follows, and two long names never collide."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:10]
    head = raw[: limit - 11].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def partial_path(output: Path) -> Path:
    """Hidden temporary name beside the output (same filesystem, so rename is atomic)."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def unique_path(path: Path) -> Path:
    """``path``, or ``stem-1.ext``, ``stem-2.ext``… if taken: never overwrite silently."""
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"{path}: too many outputs with this name.")


def move_safely(src: Path, dest_dir: Path, rel: Path) -> Path:
    """Move ``src`` to ``dest_dir/rel`` (renamed if taken); works across filesystems."""
    target = unique_path(dest_dir / rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(target))
    return target
