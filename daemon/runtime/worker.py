"""Running one claimed job: the pipeline in child processes, then deliver or fail safely.

Order of effects (so a crash at any point loses nothing and delivers once):
1. the planned output path is recorded in the job before any work;
2. the pipeline writes ``.NAME.partial.EXT`` beside it, verifies, renames into ``out/``;
3. the source moves to ``done/``; 4. the job becomes DONE.
A restart after 2 or 3 finds the verified output at the recorded path and only finishes 3-4.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from pathlib import Path

from daemon.core.artifacts import ClipPlan
from daemon.core.errors import AppError, EncodeError, QcError
from daemon.core.files import atomic_write, move_safely, unique_path
from daemon.engine.finish import Engine
from daemon.engine.pipeline import Cancelled, Progress
from daemon.engine.presets import find_preset
from daemon.runtime.config import DaemonConfig
from daemon.runtime.logs import JobAdapter
from daemon.runtime.queue import Job, Queue
from daemon.runtime.states import JobState

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, name: str, cfg: DaemonConfig, queue: Queue, stop: threading.Event) -> None:
        self.name = name
        self.cfg = cfg
        self.queue = queue
        self.stop = stop
        self.current: Engine | None = None
        self.job_id: int | None = None

    def run_forever(self, idle: float = 0.5) -> None:
        while not self.stop.is_set():
            job = self.queue.claim_next(self.name)
            if job is None:
                try:
                    self.assemble_settled()
                except Exception:  # a bug must not stop the daemon
                    log.exception("worker %s: unexpected error while assembling", self.name)
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
                lines = [
                    f"finishline could not assemble the sequence {batch.name} "
                    f"(batch {batch.id}, preset {batch.preset}).",
                    "",
                    f"What failed: {message}",
                    "",
                ]
                if isinstance(exc, EncodeError | QcError):
                    lines += [exc.report(), ""]
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
        try:
            preset = find_preset(job.preset)
            output = Path(job.output) if job.output else None
            if output is None:
                wanted = self.cfg.out / job.preset / rel.with_suffix(preset.extension)
                output = self.queue.reserve_output(job.id, wanted)
            if output.exists():
                jlog.info("output %s already delivered by an earlier run; finishing", output)
            else:
                if not src.exists():
                    raise AppError(f"{src}: the source is gone from the hot folder.")
                jlog.info("processing %s with preset %s -> %s", rel, job.preset, output)
                engine = Engine(
                    preset,
                    work_root=self.cfg.work,
                    should_stop=lambda: self.stop.is_set() or self.queue.cancel_requested(job.id),
                )
                self.current = engine
                self.queue.set_work_dir(job.id, engine.work_dir(src))
                plan = self._batch_plan(job, engine)
                t0 = time.monotonic()
                result = engine.finish(src, output, plan=plan, progress=self._throttled(job.id))
                jlog.info(
                    "delivered %s (%d frames in %.1fs)",
                    output,
                    result.plan.frame_count,
                    time.monotonic() - t0,
                )
            if src.exists():
                moved = move_safely(src, self.cfg.done / job.preset, rel)
                self.queue.set_src(job.id, moved)
                jlog.info("source moved to %s", moved)
            self.queue.transition(
                job.id,
                JobState.RUNNING,
                JobState.DONE,
                output=str(output),
                finished=time.time(),
                stage="done",
            )
        except Cancelled:
            if self.queue.cancel_requested(job.id):
                self._fail(job, src, rel, "cancelled by the user", None, JobState.CANCELLED)
            else:  # the daemon is stopping: put it back, it was not the job's fault
                jlog.info("interrupted by shutdown; job %d goes back to the queue", job.id)
                self.queue.transition(
                    job.id, JobState.RUNNING, JobState.QUEUED, stage="", worker=None
                )
        except AppError as exc:
            self._fail(job, src, rel, str(exc), exc, JobState.FAILED)
        except Exception as exc:
            self._fail(job, src, rel, f"internal error: {exc!r}", exc, JobState.FAILED)
        finally:
            self.current = None
            self.job_id = None

    def _batch_plan(self, job: Job, engine: Engine) -> ClipPlan | None:
        """This clip's plan from the batch step, once the batch has stopped growing."""
        if job.batch_id is None or not engine.needs_assessment:
            return None
        while not self.stop.is_set():  # wait for the batch to settle (no new clips)
            members = [
                j
                for j in self.queue.batch_jobs(job.batch_id)
                if j.state != "cancelled" and Path(j.src).exists()
            ]
            newest = max((j.created for j in members), default=0.0)
            wait = self.cfg.batch_window - (time.time() - newest)
            if wait <= 0:
                break
            self.queue.progress(job.id, stage="batching")
            self.stop.wait(min(wait, 1.0))
        self.queue.progress(job.id, stage="assess")
        batch_dir = self.cfg.work / f"batch-{job.batch_id:06d}"
        assessment = engine.assess({str(j.id): Path(j.src) for j in members}, batch_dir)
        return assessment.plans.get(str(job.id))

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
        jlog = JobAdapter(log, {"job": job.id})
        report = failure_report(job, message, exc)
        moved = None
        if src.exists():
            with contextlib.suppress(OSError):
                moved = move_safely(src, self.cfg.failed / job.preset, rel)
        where = moved or src
        report_path = where.with_name(where.name + ".error.txt")
        with contextlib.suppress(OSError):
            atomic_write(report_path, report)
        (jlog.warning if state is JobState.CANCELLED else jlog.error)(
            "%s: %s (source in %s, report %s)", rel, message, where, report_path
        )
        self.queue.transition(
            job.id,
            JobState.RUNNING,
            state,
            error=message,
            report=report,
            finished=time.time(),
            stage="cancelled" if state is JobState.CANCELLED else "failed",
        )
        if moved:
            self.queue.set_src(job.id, moved)


def failure_report(job: Job, message: str, exc: BaseException | None) -> str:
    lines = [
        f"finishline could not finish {job.name} (job {job.id}, preset {job.preset}).",
        "",
        f"What failed: {message}",
        "",
    ]
    if isinstance(exc, EncodeError | QcError):
        lines += [exc.report(), ""]
    elif exc is not None and not isinstance(exc, AppError):
        lines += ["Traceback:", "".join(traceback.format_exception(exc)), ""]
    lines += [
        "What to try:",
        "  - check the clip plays to the end (ffprobe / a player); re-export or copy it again;",
        "  - run it by hand for the full report: "
        f"finishline -v process FILE --preset {job.preset} -o /tmp/test.mp4",
        f"  - then retry the job: finishline queue retry {job.id}",
        "",
        "The source clip was not modified; it is next to this report.",
    ]
    return "\n".join(lines) + "\n"
