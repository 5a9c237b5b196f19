"""The engine: a batch of clips -> verified deliverables, and a batch's sequence.

Every front end drives this one class. ``finishline process`` gathers paths and draws
progress; the daemon's worker gathers a batch from the queue, waits for it to settle and
records states. Neither repeats what happens here:

1. :meth:`Engine.assess`: the batch step (assessment, reference look, colour matches, LUTs),
   run once per batch and cached in the batch folder while its members stay the same;
2. :meth:`Engine.finish`: one clip through :class:`~daemon.engine.pipeline.Pipeline` (render,
   encode, mux, the one check, rename into place) with its plan's sidecars;
3. :meth:`Engine.plan_sequence` / :meth:`Engine.assemble`: the finished clips joined into one
   deliverable.

The engine knows nothing of queues, watchers or the TUI.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from daemon.analysis.assessment import plan_batch
from daemon.core.artifacts import BatchSummary, ClipPlan, read_batch, read_plans, write_plans
from daemon.core.errors import AppError
from daemon.core.files import atomic_write
from daemon.engine.assemble import Sequence, assemble, plan_sequence
from daemon.engine.pipeline import (
    AheadAudio,
    AudioJob,
    Chunking,
    Pipeline,
    Prepared,
    ProgressCallback,
    Result,
    default_work_root,
    drop_ahead,
)
from vs_scripts.plan.preset import Preset

MEMBERS = "members.json"


@dataclass(frozen=True, slots=True)
class Assessment:
    """The batch step's outcome: the summary (``None`` when nothing could be assessed or the
    preset needs no assessment) and, per clip key, its plan."""

    summary: BatchSummary | None = None
    plans: dict[str, ClipPlan] = field(default_factory=dict)


class Engine:
    """Finishes clips with one preset. ``should_stop`` lets a caller cancel between and during
    stages (children are killed); ``threads`` caps the encoder's threads."""

    def __init__(
        self,
        preset: Preset,
        *,
        work_root: Path | None = None,
        threads: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.preset = preset
        self.work_root = work_root or default_work_root()
        self.threads = threads
        given = should_stop or (lambda: False)
        self._stopped = threading.Event()
        self.should_stop = lambda: self._stopped.is_set() or given()
        self.env = env  # the children's environment: the caller's device slot
        self._running: set[Pipeline] = set()  # several at once when clips share a SlotPool
        self._ahead: dict[Path, AudioJob] = {}  # clip -> its audio, made ahead
        self._ahead_pool: ThreadPoolExecutor | None = None

    @property
    def needs_assessment(self) -> bool:
        return self.preset.colour.match or self.preset.restore.auto

    def assess(
        self,
        members: Mapping[str, Path],
        batch_dir: Path,
        *,
        reference: str | None = None,
        ahead: Iterable[Path] = (),
    ) -> Assessment:
        """Assess ``members`` (clip key -> source) as one batch. File-locked and cached in
        ``batch_dir``: a second call with the same members (paths, sizes, times) and
        reference reads the stored plans instead of analysing again. The audio of the clips
        in ``ahead`` (the ones this engine will :meth:`finish`) is made meanwhile, one clip at
        a time, in order: it needs no picture, and the assessment leaves cores idle while
        BestSource indexes (one decoder per clip). :meth:`close` drops what no clip took."""
        if not self.needs_assessment or not members:
            return Assessment()
        for src in ahead:
            self._audio_ahead(Path(src).absolute())
        batch_dir.mkdir(parents=True, exist_ok=True)
        key = {
            "reference": reference,
            "members": {k: _identity(p) for k, p in sorted(members.items())},
        }
        with (batch_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cached = _read_json(batch_dir / MEMBERS)
            plans = read_plans(batch_dir) if cached == key else None
            if plans is not None:
                return Assessment(read_batch(batch_dir), plans)
            summary, plans = plan_batch(dict(members), self.preset, batch_dir, reference=reference)
            write_plans(batch_dir, plans)
            atomic_write(batch_dir / MEMBERS, json.dumps(key, indent=2) + "\n")
        return Assessment(summary, plans)

    def finish(
        self,
        src: Path,
        output: Path,
        *,
        plan: ClipPlan | None = None,
        progress: ProgressCallback | None = None,
        overwrite: bool = False,
        chunking: Chunking | None = None,
    ) -> Result:
        """One clip -> one verified deliverable at ``output`` (with its plan's sidecars); a
        long clip in chunks when ``chunking`` says so."""
        pipe = Pipeline(
            self.preset,
            work_root=self.work_root,
            progress=progress,
            should_stop=self.should_stop,
            threads=self.threads,
            env=self.env,
            chunking=chunking,
            audio=self._ahead.pop(Path(src).absolute(), None),
        )
        self._running.add(pipe)
        try:
            return pipe.run(src, output, overwrite=overwrite, plan=plan)
        finally:
            self._running.discard(pipe)

    def prepare(self, src: Path, *, plan: ClipPlan | None = None) -> Prepared:
        """Probe ``src`` and write and check the script :meth:`finish` would run (nothing
        is encoded)."""
        pipe = Pipeline(self.preset, work_root=self.work_root, threads=self.threads)
        return pipe.prepare(src, plan)

    def work_dir(self, src: Path) -> Path:
        from daemon.engine.pipeline import job_work_dir

        return job_work_dir(self.work_root.absolute(), Path(src).absolute(), self.preset)

    def close(self) -> None:
        """Drop the audio made ahead that no :meth:`finish` took (its ffmpeg killed), and make
        no more."""
        ahead, self._ahead = self._ahead, {}
        for job in ahead.values():
            drop_ahead(job)
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=False)
            self._ahead_pool = None

    def _audio_ahead(self, src: Path) -> None:
        if src in self._ahead:
            return
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="audio-ahead")

        pipe = Pipeline(
            self.preset, work_root=self.work_root, should_stop=self.should_stop, env=self.env
        )

        def make() -> AheadAudio:
            self._running.add(pipe)  # killed with the engine's runs
            try:
                return pipe.audio_ahead(src)
            finally:
                self._running.discard(pipe)

        self._ahead[src] = AudioJob(self._ahead_pool.submit(make), pipe)

    def stop(self) -> None:
        """Stop every run for good: they end as cancelled, their children killed."""
        self._stopped.set()
        self.cancel()

    def cancel(self) -> None:
        """Kill the running children (safe from another thread or a signal handler)."""
        for pipe in list(self._running):
            pipe.cancel()

    # -- sequences --------------------------------------------------------------------------

    def plan_sequence(
        self,
        names: list[str],
        manifest: Mapping[str, object] | None = None,
        *,
        crossfade: int | None = None,
    ) -> Sequence:
        """The order and crossfade for finished clips named ``names`` (pure; raises
        :class:`AppError` naming what is wrong)."""
        if len(set(names)) != len(names):
            raise AppError("to assemble, the clips need different file names.")
        seq = plan_sequence(names, self.preset, manifest)
        if crossfade is not None:
            if crossfade < 0:
                raise AppError("the crossfade must be 0 or more frames.")
            seq = Sequence(seq.clips, crossfade)
        return seq

    def assemble(
        self, seq: Sequence, outputs: Mapping[str, Path], target: Path, *, work: Path
    ) -> Path:
        """Join the finished ``outputs`` (name -> file) in ``seq``'s order into ``target``."""
        missing = [n for n in seq.clips if n not in outputs]
        if missing:
            raise AppError(f"cannot assemble: {', '.join(missing)} did not finish.")
        assemble(
            [outputs[n] for n in seq.clips],
            self.preset,
            target,
            crossfade_frames=seq.crossfade_frames,
            work=work,
            threads=self.threads,
        )
        return target


def _identity(path: Path) -> list[object]:
    """What makes a clip the same clip for the cache: its name, size and mtime (a daemon moves
    finished sources to ``done/``, which keeps all three)."""
    try:
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path.name, None, None]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def batch_key(paths: list[Path], preset: str) -> str:
    """A stable folder name for a batch of paths given on the command line."""
    import hashlib

    text = "\0".join([preset, *sorted(os.fspath(p.absolute()) for p in paths)])
    return "batch-" + hashlib.sha256(text.encode()).hexdigest()[:12]
