"""Running one claimed job: the pipeline in child processes, then deliver or fail safely.

Order of effects (so a crash at any point loses nothing and delivers once):
1. the planned output path is recorded in the job before any work;
2. the pipeline writes ``.NAME.partial.EXT`` beside it, verifies, renames into ``out/``;
3. the source moves to ``done/``; 4. the job becomes DONE.
A restart after 2 or 3 finds the verified output at the recorded path and only finishes 3-4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import shutil
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.core.artifacts import ClipPlan
from daemon.core.errors import AppError
from daemon.core.files import atomic_write, move_safely, short_name, unique_path
from daemon.engine.chunks import ChunkRow, ChunkStore, ChunkTask
from daemon.engine.finish import Engine
from daemon.engine.host import WarmHost, use_hosts
from daemon.engine.pipeline import (
    Cancelled,
    Children,
    Chunking,
    ChunkSlot,
    Progress,
    SourceChanged,
    run_claimed_chunk,
    stoppable,
)
from daemon.engine.presets import find_preset
from daemon.engine.slots import Slot, plan_slots, usable_cores
from daemon.runtime.cluster import ClusterPool, ClusterUnavailable
from daemon.runtime.config import DaemonConfig
from daemon.runtime.logs import JobAdapter, current_job
from daemon.runtime.queue import Job, Queue
from daemon.runtime.states import JobState
from vs_scripts.plan.preset import Preset

log = logging.getLogger(__name__)


HOST_IDLE_S = 300.0  # a worker's host idle this long is stopped (its memory, GPU memory too)


class Worker:
    """Claims jobs, and between jobs takes chunks of other workers' long jobs. Its encodes
    (every clip is at least one chunk) run in its warm host, a process in its device slot (a
    GPU, or a share of the cores) that keeps VapourSynth, torch and the networks loaded from
    one chunk to the next, and is stopped after ``HOST_IDLE_S`` without work. With a
    ``cluster``, chunks run on the cluster's nodes instead and no job is claimed while the
    cluster cannot be reached."""

    def __init__(
        self,
        name: str,
        cfg: DaemonConfig,
        queue: Queue,
        stop: threading.Event,
        slot: Slot | None = None,
        cluster: ClusterPool | None = None,
        peers: int = 1,
    ) -> None:
        self.name = name
        self.peers = peers  # the daemon's workers: between jobs, they help with its chunks
        self.cluster = cluster
        self.cfg = cfg
        self.queue = queue
        self.stop = stop
        self.slot = slot or plan_slots(cores=usable_cores())[0]
        self.current: Engine | None = None
        self.job_id: int | None = None
        self._chunks: ChunkStore | None = None
        self._host = WarmHost(f"{name}@host", self.slot.env(), self.slot.threads)
        self._host_used = time.monotonic()
        self._helped: tuple[str, int] | None = None  # the last chunk of another job it ran

    @property
    def chunks(self) -> ChunkStore:
        """The chunks table in the queue's database (one connection per worker)."""
        if self._chunks is None:
            self._chunks = ChunkStore(self.cfg.db)
        return self._chunks

    def help_with_chunks(self) -> bool:
        """Take one queued chunk of another worker's job and run it; False when there is
        none. The chunk is self-contained (its commands, its file, its frame count). With a
        cluster the job's own threads already fill every slot there: nothing to help with."""
        if self.queue.paused or self.cluster is not None:
            return False
        row = self.chunks.claim(self.name, after=self._helped)
        if row is None:
            return False
        self._helped = (row.job, row.index)  # its host goes on from there next time
        self.queue.set_worker_device(None, self.name, self.slot.device)
        context = current_job.set(row.job.removeprefix("job-"))  # its lines are that job's
        try:
            self._help(row)
        finally:
            current_job.reset(context)
        return True

    def _help(self, row: ChunkRow) -> None:
        log.info("taking chunk %d of %s", row.index, row.job)
        ended = self._chunk_dropped(row)
        with contextlib.suppress(Cancelled):  # the daemon stops: the chunk went back
            if use_hosts():
                run_claimed_chunk(
                    self.chunks, row, None, max_attempts=self.cfg.max_attempts,
                    run_task=stoppable(self._on_host, lambda: self.stop.is_set() or ended()),
                )  # fmt: skip
            else:
                runner = Children(
                    should_stop=lambda: self.stop.is_set() or ended(), env=self.slot.env()
                )
                run_claimed_chunk(
                    self.chunks, row, runner._run_pipe, max_attempts=self.cfg.max_attempts
                )

    def _chunk_dropped(self, row: ChunkRow) -> Callable[[], bool]:
        """Whether the helped job let ``row`` go (cancelled by the user, or failed on another
        chunk: its chunks are forgotten), asked of the queue at most once a second: then the
        chunk stops at once instead of rendering to its end for nothing."""
        asked, dropped = [0.0], [False]

        def check() -> bool:
            now = time.monotonic()
            if not dropped[0] and now - asked[0] >= 1.0:
                asked[0] = now
                with contextlib.suppress(sqlite3.Error):  # a busy database: ask again later
                    dropped[0] = not self.chunks.holds(row)
                if dropped[0]:
                    log.info("chunk %d of %s: its job ended; stopping it", row.index, row.job)
            return dropped[0]

        return check

    def _on_host(self, task: ChunkTask, on_progress: Callable[[int, float], None]) -> None:
        """Run a chunk on this worker's warm host (a progress callback that raises stops the
        chunk and its host)."""
        try:
            self._host.run(task, on_progress)
        finally:
            self._host_used = time.monotonic()

    def _check_on_host(self, vspipe: Sequence[str], _should_stop: Callable[[], bool]) -> int:
        """The job's script check on this worker's warm host (``Chunking.check``)."""
        try:
            return self._host.info(vspipe)
        finally:
            self._host_used = time.monotonic()

    def _placer(self):  # type: ignore[no-untyped-def]
        """The job's chunks on this worker's host (``Chunking.place``): the engine wraps the
        runner so a stop or cancel ends the chunk."""

        @contextlib.contextmanager
        def place(_should_stop):  # type: ignore[no-untyped-def]
            yield ChunkSlot("", self._on_host)  # its chunks' rows name the worker alone

        return place

    def _rest_host(self) -> None:
        """Between jobs: a host idle for ``HOST_IDLE_S`` gives its memory back."""
        if time.monotonic() - self._host_used > HOST_IDLE_S:
            self._host.stop()

    def run_forever(self, idle: float = 0.5) -> None:
        try:
            self._serve(idle)
        finally:
            self._host.stop()

    def _serve(self, idle: float) -> None:
        while not self.stop.is_set():
            if self.cluster is not None and not self.cluster.ready():
                self.stop.wait(idle)  # jobs stay queued until the cluster answers
                continue
            try:
                job = self.queue.claim_next(self.name)
            except sqlite3.Error as exc:  # a full disk or a locked database: wait, go on
                log.warning("worker %s cannot claim a job (%s); trying again", self.name, exc)
                self.stop.wait(5.0)
                continue
            if job is None:
                try:
                    if self.help_with_chunks():
                        continue
                    self.assemble_settled()
                    self._rest_host()
                except Exception:  # a bug must not stop the daemon
                    log.exception("worker %s: unexpected error between jobs", self.name)
                self.stop.wait(idle)
                continue
            try:
                self.run(job)
                self.assemble_settled()
            except Exception:  # a bug must not stop the daemon
                log.exception(
                    "worker %s: unexpected error on job %d",
                    self.name,
                    job.id,
                    extra={"job": job.id},
                )

    # -- sequences -----------------------------------------------------------------------------

    def assemble_settled(self) -> None:
        """Decide, for every batch whose jobs have all ended, whether it is assembled; assemble
        the ones whose clips are all done (one worker each, claimed in the queue)."""
        from daemon.engine.assemble import read_manifest, wants_assembly

        for batch in self.queue.settled_batches(quiet_for=self.cfg.batch_window):
            if self.stop.is_set():
                return
            try:
                preset = find_preset(batch.preset)
            except AppError:
                self.queue.set_assembly(batch.id, "none")
                continue
            folder = self.cfg.hot / batch.preset / batch.name
            if not (batch.assemble or wants_assembly(folder, preset)):
                self.queue.set_assembly(batch.id, "none")
                continue
            jobs = [j for j in self.queue.batch_jobs(batch.id) if j.state != JobState.CANCELLED]
            not_done = [j.name for j in jobs if j.state != JobState.DONE]
            if not_done:
                if batch.assembly_state != "blocked":
                    log.warning(
                        "sequence %s waits: %s did not finish; retry it and the "
                        "sequence is assembled",
                        batch.name,
                        ", ".join(not_done),
                    )
                    self.queue.set_assembly(
                        batch.id, "blocked", error=f"waiting for {', '.join(not_done)}"
                    )
                continue
            if not jobs or not self.queue.claim_assembly(batch.id):
                continue
            # the output path is recorded before the work, so a restart after the rename
            # finds the sequence delivered instead of making a second one
            if batch.assembly_output and Path(batch.assembly_output).exists():
                self.queue.set_assembly(batch.id, "done")
                continue
            target = (
                Path(batch.assembly_output)
                if batch.assembly_output
                else unique_path(self.cfg.out / batch.preset / f"{batch.name}{preset.extension}")
            )
            self.queue.set_assembly(batch.id, "running", output=str(target))
            try:
                engine = Engine(preset, work_root=self.cfg.work)
                outputs = {Path(j.name).name: Path(j.output) for j in jobs if j.output}
                seq = engine.plan_sequence(list(outputs), read_manifest(folder))
                log.info("assembling sequence %s from %d clips", batch.name, len(seq.clips))
                engine.assemble(seq, outputs, target, work=self.cfg.work / f"batch-{batch.id:06d}")
            except Exception as exc:
                message = str(exc) if isinstance(exc, AppError) else f"internal error: {exc!r}"
                report_path = self.cfg.failed / batch.preset / f"{batch.name}.sequence.error.txt"
                lines = report_head(
                    f"assemble the sequence {batch.name} (batch {batch.id}, preset {batch.preset})",
                    message,
                    exc,
                )
                lines += [
                    "The clips themselves were delivered; fix the cause and assemble by "
                    "hand: finishline process CLIPS --assemble NAME --preset " + batch.preset
                ]
                with contextlib.suppress(OSError):
                    report_path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(report_path, "\n".join(lines) + "\n")
                log.error("sequence %s: %s (report %s)", batch.name, message, report_path)
                self.queue.set_assembly(batch.id, "failed", error=message)
                continue
            self.queue.set_assembly(batch.id, "done", output=str(target))
            log.info("delivered sequence %s", target)

    # -- one job -------------------------------------------------------------------------------

    def run(self, job: Job) -> None:
        jlog = JobAdapter(log, {"job": job.id})
        self.job_id = job.id
        src = Path(job.src)
        rel = Path(job.name)
        context = current_job.set(str(job.id))  # the engine's lines are this job's too
        try:
            preset = find_preset(job.preset)
            output = Path(job.output) if job.output else None
            if output is None:
                wanted = self.cfg.out / job.preset / rel.with_suffix(preset.extension)
                output = self.queue.reserve_output(job.id, wanted)
            if output.exists() and not job.replace_output:
                jlog.info("output %s already delivered by an earlier run; finishing", output)
            else:
                self._process(job, preset, src, output, jlog)
            self._deliver(job, src, rel, output, jlog)
        except SourceChanged as exc:
            note = str(exc)
            jlog.warning("%s; job %d goes back to the queue", note, job.id)
            self._hold(lambda: self._put_back(job, note=note))
        except ClusterUnavailable as exc:
            jlog.warning("%s Job %d goes back to the queue.", exc, job.id)
            self._put_back(job, note=str(exc))
        except Cancelled:
            if self.queue.cancel_requested(job.id):
                self._fail(job, src, rel, "cancelled by the user", None, JobState.CANCELLED)
            else:  # the daemon is stopping: put it back, it was not the job's fault
                jlog.info("interrupted by shutdown; job %d goes back to the queue", job.id)
                self._put_back(job)
        except AppError as exc:
            self._fail(job, src, rel, str(exc), exc, JobState.FAILED)
        except _Held:
            jlog.warning(
                "the daemon stops while the queue cannot be written; job %d is "
                "resumed at the next start",
                job.id,
            )
        except Exception as exc:
            self._fail(job, src, rel, f"internal error: {exc!r}", exc, JobState.FAILED)
        finally:
            self.current = None
            self.job_id = None
            current_job.reset(context)

    def _process(self, job: Job, preset: Preset, src: Path, output: Path, jlog) -> None:  # type: ignore[no-untyped-def]
        if not src.exists():
            raise AppError(f"{src}: the source is gone; drop the clip into the hot folder again.")
        self._wait_until_settled(job, src)
        jlog.info("processing %s with preset %s -> %s", job.name, job.preset, output)
        engine = Engine(
            preset,
            work_root=self.cfg.work,
            threads=self.cluster.threads() if self.cluster else self.slot.threads,
            env=self.slot.env(),
            should_stop=lambda: self.stop.is_set() or self.queue.cancel_requested(job.id),
        )
        self.current = engine
        try:
            self._run_engine(engine, job, src, output, jlog)
        finally:
            engine.close()  # the audio made ahead, when the job ended before taking it

    def _run_engine(self, engine: Engine, job: Job, src: Path, output: Path, jlog) -> None:  # type: ignore[no-untyped-def]
        self.queue.set_work_dir(job.id, engine.work_dir(src))
        self.queue.set_worker_device(job.id, self.name, self.slot.device)
        plan = self._batch_plan(job, engine)
        t0 = time.monotonic()
        chunking = Chunking(
            store=self.chunks,
            job=f"job-{job.id}",
            seconds=self.cfg.chunk_seconds,
            worker=self.name,
            max_attempts=self.cfg.max_attempts,
            envs=(self.slot.env(),),
            sharers=self.peers,
        )
        if use_hosts():  # a short clip is one chunk too, on the host
            chunking = dataclasses.replace(
                chunking, envs=(), place=self._placer(), always=True, check=self._check_on_host
            )
        if self.cluster is not None:
            chunking = self._on_cluster(chunking, job.preset)
        result = engine.finish(
            src,
            output,
            plan=plan,
            progress=self._throttled(job.id),
            overwrite=bool(job.replace_output),
            chunking=chunking,
        )
        jlog.info(
            "delivered %s (%d frames in %.1fs)%s",
            output,
            result.plan.frame_count,
            time.monotonic() - t0,
            " replacing the earlier output" if job.replace_output else "",
        )
        for note in result.plan.notes:  # e.g. an HDR source tone-mapped, a VFR source made CFR
            jlog.info("%s: %s", job.name, note)

    def _on_cluster(self, chunking: Chunking, preset: str) -> Chunking:
        """The job's chunks placed on the cluster: as many at once as it has slots for the
        preset (``[cluster.resources]``)."""
        assert self.cluster is not None
        needs = self.cfg.cluster.needs(preset)
        return dataclasses.replace(
            chunking,
            workers=max(1, self.cluster.slots(needs)),
            sharers=0,  # the cluster's slots; the daemon's other workers do not help there
            place=self.cluster.placer(needs, preset=preset),
            always=True,
            check=None,  # vspipe --info here, not a local host started just for the check
        )

    def _deliver(self, job: Job, src: Path, rel: Path, output: Path, jlog) -> None:  # type: ignore[no-untyped-def]
        """After the output is in place: the source to ``done/`` (unless it is there already:
        a re-run), an earlier failure's report removed, the job DONE. A queue that cannot be
        written holds here until it can (the output is delivered and stays)."""
        if src.exists():
            moved = self._place(src, self.cfg.done / job.preset, rel)
            if moved != src:
                self._hold(
                    lambda: self.queue.set_src(job.id, moved), undo=lambda: moved.rename(src)
                )
                jlog.info("source moved to %s", moved)
                _remove_quietly(report_path(src))  # a retried job's old report
        self._hold(
            lambda: self.queue.transition(
                job.id,
                JobState.RUNNING,
                JobState.DONE,
                output=str(output),
                finished=time.time(),
                stage="done",
                replace_output=0,
            )
        )

    def _put_back(self, job: Job, note: str | None = None) -> None:
        self.queue.transition(
            job.id, JobState.RUNNING, JobState.QUEUED, stage="", worker=None, note=note
        )

    def _wait_until_settled(self, job: Job, src: Path) -> None:
        """A source changed within the settle time is still being written: wait for it."""
        while not self.stop.is_set():
            age = time.time() - src.stat().st_mtime
            if age >= self.cfg.settle_seconds:
                return
            self.queue.progress(job.id, stage="settling", note="the source is still changing")
            self.stop.wait(min(1.0, self.cfg.settle_seconds - age))

    @staticmethod
    def _place(src: Path, folder: Path, rel: Path) -> Path:
        """``src`` moved to ``folder/rel``, or left where it is when it already lives under
        ``folder`` (a retried job's source in ``failed/``, a re-run's in ``done/``): one
        source, never ``name-1`` copies of it."""
        with contextlib.suppress(OSError, ValueError):
            if src.resolve().is_relative_to(folder.resolve()):
                return src
        return move_safely(src, folder, rel)

    def _hold(self, write, *, undo=None):  # type: ignore[no-untyped-def]
        """Run a queue write; while the database cannot be written (a full disk), log once
        and retry every few seconds instead of dying. If the daemon stops first, ``undo``
        puts the file system back the way the database still describes it."""
        warned = False
        while True:
            try:
                return write()
            except sqlite3.OperationalError as exc:
                if not warned:
                    log.error(
                        "the queue database cannot be written (%s); holding job %s and "
                        "retrying every 5 s (free space in %s)",
                        exc,
                        self.job_id,
                        self.cfg.root,
                    )
                    warned = True
                if self.stop.wait(5.0):
                    if undo is not None:
                        with contextlib.suppress(OSError):
                            undo()
                    raise _Held() from exc

    def _batch_plan(self, job: Job, engine: Engine) -> ClipPlan | None:
        """This clip's plan from the batch step, once the batch is complete (see
        :meth:`_batch_members`)."""
        if job.batch_id is None or not engine.needs_assessment:
            return None
        members = self._batch_members(job)
        self.queue.progress(job.id, stage="assess", note="assessing the batch")
        batch_dir = self.cfg.work / f"batch-{job.batch_id:06d}"
        assessment = engine.assess(
            {str(j.id): Path(j.src) for j in members}, batch_dir, ahead=[Path(job.src)]
        )
        return assessment.plans.get(str(job.id))

    def _batch_members(self, job: Job) -> list[Job]:
        """Wait until the batch stops growing and return its clips. A subfolder batch is
        complete once every video in its folder has a job and none arrived within the settle
        time; loose clips wait ``batch_window`` after the newest one (the window restarts on
        each new clip). The wait and its end are shown in the job's note."""
        batch = self.queue.batch(job.batch_id) if job.batch_id is not None else None
        folder = None
        if batch is not None and not batch.name.startswith("drop-"):
            folder = self.cfg.hot / job.preset / batch.name
        while True:
            members = [
                j
                for j in self.queue.batch_jobs(job.batch_id)  # type: ignore[arg-type]
                if j.state != "cancelled" and Path(j.src).exists()
            ]
            newest = max((j.created for j in members), default=0.0)
            quiet = self.cfg.settle_seconds if folder is not None else self.cfg.batch_window
            wait = quiet - (time.time() - newest)
            missing = _unqueued_files(folder, members) if folder is not None else 0
            if (wait <= 0 and not missing) or self.stop.is_set():
                return members
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + max(wait, 0)))
            note = (
                f"waiting for {missing} more clip(s) of {batch.name} to finish copying"
                if missing
                else f"waiting for more clips of {batch.name if batch else 'the batch'} "
                f"until {until}"
            )
            self.queue.progress(job.id, stage="batching", eta_s=max(wait, 0.0), note=note)
            self.stop.wait(min(max(wait, 0.2), 1.0))

    def _throttled(self, job_id: int, every: float = 1.0):  # type: ignore[no-untyped-def]
        last = [0.0, ""]

        def report(p: Progress) -> None:
            now = time.monotonic()
            if p.stage != last[1] or now - last[0] >= every:
                last[0], last[1] = now, p.stage
                self.queue.progress(
                    job_id,
                    stage=p.stage,
                    frame=p.frame,
                    total=p.total,
                    fps=round(p.fps, 3),
                    eta_s=p.eta_s,
                )

        return report

    def _fail(
        self,
        job: Job,
        src: Path,
        rel: Path,
        message: str,
        exc: BaseException | None,
        state: JobState,
    ) -> None:
        """File the source in ``failed/`` beside a report and record the failure."""
        forgotten = False
        with contextlib.suppress(sqlite3.Error):  # its chunks are not worth anyone's time now
            self.chunks.forget(f"job-{job.id}")
            forgotten = True
        chunk_files = self.current.work_dir(src) / "chunks" if self.current else None
        report, message = self.file_failure(
            job, src, rel, message, exc, cancelled=state is JobState.CANCELLED
        )
        if chunk_files is not None and forgotten and not src.exists():
            # nor their files, once the source has moved to failed/: a retry runs it from
            # there, in another work folder, and would never take them (they would stay here
            # for good, the size of the output). A source that was in failed/ already (a
            # retry failing again) keeps its folder, and the next retry its finished chunks.
            shutil.rmtree(chunk_files, ignore_errors=True)
        self._hold(
            lambda: self.queue.transition(
                job.id,
                JobState.RUNNING,
                state,
                error=message,
                report=report,
                finished=time.time(),
                stage="cancelled" if state is JobState.CANCELLED else "failed",
            )
        )

    def file_failure(
        self,
        job: Job,
        src: Path,
        rel: Path,
        message: str,
        exc: BaseException | None = None,
        *,
        cancelled: bool = False,
    ) -> tuple[str, str]:
        """Move the source to ``failed/`` (unless it is there already) and write the report
        beside it; returns the report and the message, both naming the source where it now
        is. The database always says where the source is; a
        report that cannot be written is itself logged (the report is also kept in the queue:
        ``finishline queue show ID``)."""
        jlog = JobAdapter(log, {"job": job.id})
        where = src
        if src.exists():
            try:
                where = self._place(src, self.cfg.failed / job.preset, rel)
            except OSError as move_exc:
                jlog.error("could not move %s to failed/ (%s); it stays where it is", src, move_exc)
            if where != src:
                moved = where
                self._hold(
                    lambda: self.queue.set_src(job.id, moved), undo=lambda: moved.rename(src)
                )
        message = message.replace(str(src), str(where))  # name paths that exist
        report = failure_report(job, message, exc, source=where, cancelled=cancelled)
        target = report_path(where)
        try:
            atomic_write(target, report)
        except OSError as write_exc:
            jlog.error(
                "could not write the error report %s (%s); read it with: finishline queue show %d",
                target,
                write_exc,
                job.id,
            )
        (jlog.warning if cancelled else jlog.error)(
            "%s: %s (source in %s, report %s)", rel, message, where, target
        )
        return report, message


class _Held(Exception):
    """The daemon stopped while a queue write was being held (it resumes at the next start)."""


def report_path(source: Path) -> Path:
    """``NAME.error.txt`` beside a source, shortened (with a hash) to fit a file name."""
    return source.with_name(short_name(source.name, limit=200) + ".error.txt")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _unqueued_files(folder: Path, members: list[Job]) -> int:
    """Video files in a batch folder that have no job yet (still being copied)."""
    from daemon.runtime.intake import is_ignored

    if not folder.is_dir():
        return 0
    known = {Path(j.src).name for j in members} | {Path(j.name).name for j in members}
    try:
        names = [p.name for p in folder.iterdir() if p.is_file() and not is_ignored(p)]
    except OSError:
        return 0
    return sum(1 for n in names if n not in known)


def report_head(subject: str, message: str, exc: BaseException | None) -> list[str]:
    """The first lines of every error report: what could not be done, why, and the commands
    with their stderr tails when processes failed."""
    lines = [f"finishline could not {subject}.", "", f"What failed: {message}", ""]
    report = getattr(exc, "report", None)  # EncodeError, QcError, ChunkFailed
    if isinstance(exc, AppError) and callable(report):
        lines += [report(), ""]
    return lines


def failure_report(
    job: Job, message: str, exc: BaseException | None, *, source: Path, cancelled: bool = False
) -> str:
    lines = report_head(f"finish {job.name} (job {job.id}, preset {job.preset})", message, exc)
    if exc is not None and not isinstance(exc, AppError):
        lines += ["Traceback:", "".join(traceback.format_exception(exc)), ""]
    if cancelled:
        lines += [
            "The job was cancelled on request; nothing is wrong with the clip.",
            f"To run it after all: finishline queue retry {job.id}",
        ]
    else:
        lines += [
            "What to try:",
            "  - check the clip plays to the end (ffprobe / a player); re-export or copy it again;",
            "  - run it by hand for the full report: "
            f"finishline -v process {shlex.quote(str(source))} --preset {job.preset} "
            "-o /tmp/test" + source.suffix,
            f"  - then retry the job: finishline queue retry {job.id}",
        ]
    lines += ["", f"The source clip was not modified; it is at {source}"]
    return "\n".join(lines) + "\n"
