"""Device slots: which GPU, or which share of the CPU cores, a worker's children may use.

A worker owns one slot for its life. Its children (vspipe, ffmpeg) get the slot's environment:
``CUDA_VISIBLE_DEVICES`` of its GPU (so torch's ``cuda`` is that GPU), and a thread budget
(``FINISHLINE_THREADS`` for VapourSynth's core, torch and OpenVINO; ``OMP_NUM_THREADS`` and
friends for the libraries that read them; the encoder gets it as ``-threads``/``pools``). The
budgets of all slots add up to the machine's cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from daemon.core.tools import usable_cores

__all__ = ["Slot", "count_gpus", "plan_slots", "usable_cores", "visible_gpus"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True, slots=True)
class Slot:
    name: str  # "gpu0", "gpu0.1" (two workers sharing GPU 0), "cpu1"
    gpu: int | None
    threads: int

    @property
    def device(self) -> str:
        """What ``queue list`` shows: the GPU as this slot's children are given it (its entry
        in the daemon's own ``CUDA_VISIBLE_DEVICES``, an index or a UUID, where that is
        set), or the CPU, and the thread budget."""
        if self.gpu is None:
            return f"cpu ({self.threads} threads)"
        return f"cuda:{self._visible(os.environ)} ({self.threads} threads)"

    def _visible(self, parent: Mapping[str, str]) -> str:
        """This slot's children's ``CUDA_VISIBLE_DEVICES``, under a ``parent`` environment.
        A CPU slot sees no GPU: it must not wander onto one another worker owns. GPU i is the
        i-th the daemon itself may see: where it was started with CUDA_VISIBLE_DEVICES (GPUs
        left to other work), the slots stay within that list."""
        if self.gpu is None:
            return ""
        seen = visible_gpus(parent)
        if seen is None:
            return str(self.gpu)
        return seen[self.gpu] if self.gpu < len(seen) else ""  # past the end: none

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The children's environment for this slot."""
        env = dict(os.environ if base is None else base)
        env["CUDA_VISIBLE_DEVICES"] = self._visible(env)
        env["FINISHLINE_THREADS"] = str(self.threads)
        for var in THREAD_VARIABLES:
            env[var] = str(self.threads)
        return env


def plan_slots(
    *,
    workers: int = 0,
    gpus: int = 0,
    workers_per_gpu: int = 1,
    cores: int = 1,
    per_core: bool = True,
) -> list[Slot]:
    """The slots of one machine (pure). With GPUs: ``workers_per_gpu`` slots per GPU (0
    ``workers``: all of them; otherwise the first ``workers``, GPUs taken in turn). Without:
    ``workers`` CPU slots (0: one), at most one per core unless not ``per_core`` (more
    encoders would only slice the same cores thinner; a cluster's head, whose workers mostly
    wait on the cluster, may run more). The cores are shared out so the budgets add up to
    ``cores`` (each slot at least one thread)."""
    cores = max(1, cores)
    if gpus > 0:
        per = max(1, workers_per_gpu)
        order = [(g, k) for k in range(per) for g in range(gpus)]  # spread over the GPUs first
        n = len(order) if workers <= 0 else min(workers, len(order))
        chosen = sorted(order[:n])
        shares = _share(cores, n)
        return [
            Slot(f"gpu{g}" + (f".{k}" if per > 1 else ""), g, shares[i])
            for i, (g, k) in enumerate(chosen)
        ]
    n = min(max(1, workers), cores) if per_core else max(1, workers)
    return [Slot(f"cpu{i}", None, t) for i, t in enumerate(_share(cores, n))]


def _share(cores: int, n: int) -> list[int]:
    base, extra = divmod(cores, n)
    return [max(1, base + (1 if i < extra else 0)) for i in range(n)]


def visible_gpus(env: Mapping[str, str]) -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` in ``env`` lets a process see (indices, UUIDs or MIG
    names, in CUDA's order), or ``None`` when it is not set (every GPU). As CUDA reads it, the
    list ends at the first entry that is empty or negative (``-1``: none)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    seen = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        seen.append(entry)
    return seen


def count_gpus() -> int:
    """The NVIDIA GPUs this process may use: NVML's count, within ``CUDA_VISIBLE_DEVICES``
    when that is set; 0 when there are none or no driver. ``FINISHLINE_GPUS=N`` pins the
    number (e.g. to leave GPUs to other work; slots are GPUs 0..N-1 of what the process may
    see)."""
    seen = visible_gpus(os.environ)
    pinned = os.environ.get("FINISHLINE_GPUS", "")
    if pinned.isdigit():
        return int(pinned) if seen is None else min(int(pinned), len(seen))
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            found = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0
    return found if seen is None else min(found, len(seen))
