"""One clip -> one verified deliverable: probe, render, encode, mux, verify, rename.

The source is only ever read. The output is written under a hidden temporary name in the
destination folder and renamed into place only after it passed verification.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import itertools
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from daemon.core.artifacts import (
    QC_SUFFIX,
    SCRIPT,
    ClipPlan,
    JobResult,
    still_beside,
    write_probe,
    write_result,
)
from daemon.core.errors import AppError, EncodeError, ProbeError, QcError, VerifyError
from daemon.core.files import atomic_write, partial_path
from daemon.core.places import xdg_dir
from daemon.core.probe import probe
from daemon.core.tools import find_tool, media_arg, pid_alive, run_capture, tail
from daemon.engine import commands as C
from daemon.engine.checks import Expected, Report, evaluate
from daemon.engine.chunks import (
    ChunkFailed,
    ChunkRow,
    ChunkStore,
    ChunkTask,
    PipeRunner,
    join_chunks,
    run_chunk,
    write_chunk_record,
)
from daemon.engine.measure import detail_focus, measure
from daemon.engine.slots import Slot
from vs_scripts.plan.chunks import Chunk, chunk_length, map_cuts, plan_chunks, shared_length
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import Preset
from vs_scripts.plan.render import (
    ScriptPlan,
    display_size,
    model_args,
    plan_script,
    render_script,
)

log = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"Frame:\s*(\d+)/(\d+)(?:\s*\(([\d.]+)\s*fps\))?")


@dataclass(slots=True)
class Progress:
    """What a stage reports; the CLI draws it, the daemon throttles it into the queue."""

    stage: str
    frame: int = 0
    total: int = 0
    fps: float = 0.0

    @property
    def eta_s(self) -> float | None:
        if self.fps <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.frame) / self.fps)


ProgressCallback = Callable[[Progress], None]


@dataclass(slots=True)
class StageTiming:
    stage: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Prepared:
    """One run's prepared state: what the stages after the script check share."""

    src: Path
    media: MediaInfo
    plan: ScriptPlan
    work: Path
    script: Path
    cache: Path
    cuts: tuple[float, ...] | None = None  # where shots start (s), from the assessment


@dataclass(slots=True)
class Result:
    output: Path
    media: MediaInfo
    plan: ScriptPlan
    work_dir: Path
    script: Path
    timings: list[StageTiming] = field(default_factory=list)


class Cancelled(AppError):
    title = "cancelled"


class SourceChanged(AppError):
    """The source was written to while it was processed; its output is not delivered."""

    title = "source changed"


def default_work_root() -> Path:
    return xdg_dir("cache") / "jobs"


def job_work_dir(root: Path, src: Path, preset: Preset) -> Path:
    """A stable folder per (source path, preset) so reruns find the script and index."""
    key = hashlib.sha256(f"{src.resolve()}\0{preset.name}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", src.stem)[:40] or "clip"
    return root / f"{stem}-{preset.name}-{key}"


class Children:
    """The child processes of a run (vspipe, ffmpeg): started with a parent-death signal and
    the slot's environment, several at once (chunks), all killed by :meth:`cancel`."""

    def __init__(
        self,
        should_stop: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.should_stop = should_stop or (lambda: False)
        self.env = env  # the children's environment (a worker's device slot), None: ours
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._cancelled = False

    def cancel(self) -> None:
        """Kill the running children and start no more (safe from another thread or a signal
        handler)."""
        self._cancelled = True
        with self._lock:
            for proc in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    # -- stages -------------------------------------------------------------------------------

    def _run_pipe(
        self,
        first: Sequence[str],
        second: Sequence[str],
        total: int,
        on_frames: Callable[[int, float], None],
        *,
        env: dict[str, str] | None = None,
    ) -> None:
        """``first | second``; ``on_frames(done, fps)`` follows vspipe's progress. Several
        may run at once (chunks); :meth:`cancel` kills them all, and any started after it."""
        if self._halted():
            raise Cancelled("cancelled before encoding.")
        p1 = subprocess.Popen(
            with_parent(first),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or self.env,
        )
        try:
            p2 = subprocess.Popen(
                with_parent(second),
                stdin=p1.stdout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env or self.env,
            )
        except BaseException:
            p1.kill()
            p1.wait()
            raise
        assert p1.stdout is not None
        p1.stdout.close()  # so vspipe gets SIGPIPE if the encoder dies
        with self._lock:
            self._procs += [p1, p2]
            if self._cancelled:  # cancelled while they started: they end with the others
                _kill(p1, p2)
        tails = [deque[str](maxlen=40), deque[str](maxlen=40)]
        started = time.monotonic()

        def on_line(line: str) -> None:
            m = _FRAME_RE.search(line)
            if m:
                done = int(m.group(1))
                elapsed = time.monotonic() - started
                fps = done / elapsed if elapsed > 0 else 0.0
                on_frames(done, fps)
            else:
                tails[0].append(line)

        readers = [
            threading.Thread(target=pump, args=(p1.stderr, on_line), daemon=True),
            threading.Thread(target=pump, args=(p2.stderr, tails[1].append), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            while p2.poll() is None or p1.poll() is None:
                if self._halted():
                    _kill(p1, p2)
                    raise Cancelled("cancelled while encoding.")
                # a wait, not a sleep: the next chunk starts the moment this one ends
                with contextlib.suppress(subprocess.TimeoutExpired):
                    (p2 if p2.poll() is None else p1).wait(timeout=0.1)
        except BaseException:
            _kill(p1, p2)
            raise
        finally:
            for t in readers:
                t.join(timeout=5)
            with self._lock:
                self._procs = [p for p in self._procs if p not in (p1, p2)]
        codes = [p1.returncode, p2.returncode]
        if codes != [0, 0] and self._halted():  # killed by a cancel: no failed attempt
            raise Cancelled("cancelled while encoding.")
        if codes != [0, 0]:
            raise EncodeError(
                "encode",
                [first, second],
                codes,
                ["\n".join(t) for t in tails],
                hint=_encode_hint(codes, tails),
            )

    def _halted(self) -> bool:
        """Stopped (by the caller) or cancelled: no child may start."""
        return self.should_stop() or self._cancelled

    def _run_one(self, cmd: Sequence[str], stage: str) -> str:
        if self._halted():
            raise Cancelled(f"cancelled before {stage}.")
        proc = subprocess.Popen(
            with_parent(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        with self._lock:
            self._procs.append(proc)
            if self._cancelled:  # cancelled while it started: it ends with the others
                proc.kill()
        try:
            _, err = proc.communicate()
        finally:
            with self._lock:
                self._procs = [p for p in self._procs if p is not proc]
        text = err.decode("utf-8", "replace")
        if proc.returncode != 0:
            if self.should_stop():
                raise Cancelled(f"cancelled during {stage}.")
            raise EncodeError(stage, [cmd], [proc.returncode], [tail(text)])
        return text


class Pipeline(Children):
    """Runs the stages for one clip. ``should_stop`` lets a daemon cancel between and during
    stages (children are killed)."""

    def __init__(
        self,
        preset: Preset,
        *,
        work_root: Path | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        threads: int | None = None,
        env: dict[str, str] | None = None,
        chunking: Chunking | None = None,
        audio: AudioJob | None = None,
    ) -> None:
        super().__init__(should_stop, env)
        self.preset = preset
        self.ahead = audio  # this clip's audio, being made ahead (see :meth:`audio_ahead`)
        self.work_root = work_root or default_work_root()
        self.progress = progress or (lambda p: None)
        self.threads = threads
        self.chunking = chunking
        self._models: dict[str, str] = {}
        self._last_on: dict[str, tuple[str, int]] = {}  # slot name -> (job, chunk) it ran last

    def cancel(self) -> None:
        super().cancel()
        if (ahead := self.ahead) is not None:  # the audio being made ahead for this run
            ahead.maker.cancel()

    # -- public -------------------------------------------------------------------------------

    def run(
        self,
        src: Path,
        output: Path,
        *,
        overwrite: bool = False,
        plan: ClipPlan | None = None,
    ) -> Result:
        """Process ``src`` into ``output``. ``plan`` comes from the batch step (tuning, LUT and
        the sidecar files delivered beside the output)."""
        try:
            return self._run(src, output, overwrite=overwrite, plan=plan)
        finally:
            self._drop_ahead()

    def _run(self, src: Path, output: Path, *, overwrite: bool, plan: ClipPlan | None) -> Result:
        # absolute: vspipe runs the script with its own folder as the working directory
        src = Path(src).absolute()
        output = Path(output)
        _check_target(src, output, overwrite)
        before = _identity(src)
        timings: list[StageTiming] = []
        job = self.prepare(src, plan, timings)
        _sweep_orphans(job.work)
        # unique per run: a child orphaned by a hard kill can never write into a later run's file
        video = (
            job.work
            / f"video.{os.getpid()}.{time.monotonic_ns()}{C.intermediate_suffix(self.preset)}"
        )
        audio = video.with_name(video.stem.replace("video.", "audio.", 1) + ".mov")
        partial = partial_path(output)
        still = job.work / f"compare.{os.getpid()}.png"
        delivered = False
        # the audio needs no picture: it is prepared while the video encodes, so on a machine
        # with cores to spare it costs no time, and the mux after the encode only copies
        pool = ThreadPoolExecutor(1, thread_name_prefix="audio")
        try:
            audio_ready = pool.submit(self._audio, job, audio, timings)
            try:
                with self._timed("encode", timings):
                    self._encode(job, video)
            except BaseException:
                audio_ready.cancel()
                self.cancel()  # the audio's ffmpeg too: the job ends here
                raise
            with self._timed("mux", timings):
                self._mux(video, audio_ready.result(), partial)
            with self._timed("verify", timings):
                # the before/after still is drawn from the muxed file while it is checked
                drawing = pool.submit(self._draw_still, job, partial, still, timings)
                report = self._verify(job, partial, output.name)
                drawn = drawing.result()
            if output.exists() and not overwrite:
                raise AppError(f"{output}: appeared while encoding; not overwriting it.")
            if _identity(src) != before:
                raise SourceChanged(
                    f"{src.name} changed while it was processed (still being copied?); "
                    "its output was not delivered"
                )
            os.replace(partial, output)
            delivered = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            pool.shutdown(wait=True)
            for path in (video, audio, *(() if delivered else (still,))):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        # the output is delivered: nothing after this point may fail the job
        self._deliver_sidecars(output, plan, report, still if drawn else None)
        result = Result(output, job.media, job.plan, job.work, job.script, timings)
        with contextlib.suppress(OSError):
            write_result(
                job.work,
                JobResult(
                    str(output),
                    job.plan.frame_count,
                    (job.plan.width, job.plan.height),
                    C.fps_text(job.plan.fps),
                    {t.stage: round(t.seconds, 3) for t in timings},
                ),
            )
        return result

    def prepare(
        self, src: Path, plan: ClipPlan | None = None, timings: list[StageTiming] | None = None
    ) -> Prepared:
        """Probe, render the script, check that it loads and gives the planned frames (the
        script and folder a run, ``finishline render`` and a by-hand ``vspipe`` share)."""
        src = Path(src).absolute()
        timings = [] if timings is None else timings
        tuning = plan.tuning if plan else None
        lut = plan.lut if plan else None
        if tuning is not None and tuning.lut and lut is None:
            raise AppError("a colour LUT was planned but no .cube file was given.")
        with self._timed("probe", timings):
            media = probe(src)
        work = self._job_dir(src)
        write_probe(work, media)
        with self._timed("render", timings):
            splan = plan_script(self.preset, media)
            self._models = self._model_paths(splan)
            if lut is not None:
                self._models["lut"] = str(Path(lut).resolve())
            script = work / SCRIPT
            if plan is not None and plan.index is not None:
                cache = plan.index.absolute()  # the assessment indexed the clip already
            else:
                cache = work / "index"
                cache.mkdir(exist_ok=True)
            atomic_write(
                script,
                self._reproduction(script, src, cache) + render_script(self.preset, media, tuning),
            )
            frames = self._check_script(script, src, cache, splan)
            splan = dataclasses.replace(splan, frame_count=frames)
        return Prepared(src, media, splan, work, script, cache, plan.cuts if plan else None)

    def _job_dir(self, src: Path) -> Path:
        # absolute: vspipe runs the script from its own folder, so a relative path would nest
        work = job_work_dir(self.work_root.absolute(), src, self.preset)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def _reproduction(self, script: Path, src: Path, cache: Path) -> str:
        """Comment lines naming the exact command that reproduces this job's picture (every
        argument, model paths included, absolute), for pasting into a shell."""
        cmd = C.vspipe_command(
            find_tool("vspipe"), str(script), src=str(src), cache=str(cache), extra=self._models
        )
        return (
            "# This job's picture, exactly (paste into a shell; add -s/-e for a range):\n"
            f"#   {shlex.join(cmd)} | ffmpeg -i - -c:v ffv1 picture.mkv\n"
        )

    def _verify(self, job: Prepared, path: Path, name: str) -> Report:
        """One measurement, one set of checks: the required ones always, the preset's QC when
        it is on. A miss raises with the whole report; nothing is delivered."""
        report = check_output(
            path, self.preset, job.plan, expect_audio=self._expects_audio(job.media), name=name
        )
        if self.preset.qc.enabled:
            with contextlib.suppress(OSError):
                atomic_write(job.work / "qc.json", report.to_json())
        return report

    def _deliver_sidecars(
        self,
        output: Path,
        plan: ClipPlan | None,
        report: Report,
        still: Path | None,
    ) -> None:
        """Best-effort files beside a delivered output (assessment, LUT, QC report, the
        ``still`` drawn while it was checked): a failure is logged, never fails the job."""
        files = dict(plan.sidecars()) if plan else {}
        try:
            for suffix, path in files.items():
                atomic_write(output.with_name(output.stem + suffix), path.read_bytes())
            if self.preset.qc.enabled:
                atomic_write(output.with_name(output.stem + QC_SUFFIX), report.to_json())
            if still is not None:
                os.replace(still, still_beside(output))
        except OSError as exc:
            log.warning(
                "%s: delivered, but a file beside it could not be written (%s)", output.name, exc
            )

    def _model_paths(self, plan: ScriptPlan) -> dict[str, str]:
        from daemon.engine.models import model_dir, require

        out = {arg: str(require(name)) for arg, name in model_args(self.preset, plan).items()}
        if self.preset.ai.tensorrt and plan.upscale:
            out["engine_cache"] = str(model_dir() / "tensorrt")  # engines built once, reused
        return out

    def _expects_audio(self, media: MediaInfo) -> bool:
        a = self.preset.audio
        return a.codec != "none" and (media.has_audio or a.missing == "silence")

    def _check_script(self, script: Path, src: Path, cache: Path, plan: ScriptPlan) -> int:
        """``vspipe --info``: the script loads and gives the planned frame count. Where the
        chunks run in warm hosts, a host answers (its networks are loaded already, and it
        keeps the script open for the first chunk) instead of a new vspipe process."""
        cmd = C.vspipe_command(
            find_tool("vspipe"),
            str(script),
            src=str(src),
            cache=str(cache),
            extra=self._models,
            info=True,
        )
        hint = f"open {script} in vspreview or run the command in the report to see why"
        c = self.chunking
        if c is not None and c.check is not None:
            try:
                frames = c.check(cmd, self.should_stop)
            except EncodeError as exc:
                _raise_if_undecodable(src, "\n".join(exc.tails))
                raise EncodeError("script check", [cmd], exc.codes, exc.tails, hint=hint) from None
        else:
            res = run_capture(cmd, timeout=600)
            if res.returncode != 0:
                _raise_if_undecodable(src, res.stderr)
                raise EncodeError(
                    "script check", [cmd], [res.returncode], [tail(res.stderr)], hint=hint
                )
            m = re.search(r"^Frames:\s*(\d+)", res.stdout, re.M)
            if not m:
                raise EncodeError("script check", [cmd], [0], [tail(res.stdout + res.stderr)])
            frames = int(m.group(1))
        if abs(frames - plan.frame_count) > 1:
            raise EncodeError(
                "script check",
                [cmd],
                [0],
                [f"script gives {frames} frames, planned {plan.frame_count}"],
            )
        return frames

    def _encode(self, job: Prepared, video: Path) -> None:
        chunks = self._chunk_plan(job)
        if len(chunks) > 1 or (self.chunking is not None and self.chunking.always):
            assert self.chunking is not None
            self._encode_chunked(job, video, chunks)
            return
        vspipe_cmd, enc_cmd = self._commands(job, str(video))
        total = job.plan.frame_count
        self.progress(Progress("encode", 0, total))
        with self._local_slot(0) as env:  # other clips of the run may hold the others
            self._run_pipe(vspipe_cmd, enc_cmd, total, self._encode_progress(total), env=env)
        if not video.exists() or video.stat().st_size == 0:
            raise EncodeError(
                "encode",
                [vspipe_cmd, enc_cmd],
                [0, 0],
                ["", "no output written"],
            )

    def _commands(
        self, job: Prepared, output: str, start: int = 0, end: int | None = None
    ) -> tuple[list[str], list[str]]:
        vspipe_cmd = C.vspipe_command(
            find_tool("vspipe"),
            str(job.script),
            src=str(job.src),
            cache=str(job.cache),
            extra=self._models,
            start=start,
            end=end,
        )
        enc_cmd = C.encoder_command(
            self.preset,
            job.plan,
            output=output,
            ffmpeg=find_tool("ffmpeg"),
            threads=self.threads,
        )
        return vspipe_cmd, enc_cmd

    def _encode_progress(self, total: int) -> Callable[[int, float], None]:
        return lambda done, fps: self.progress(Progress("encode", done, total, fps))

    # -- chunks -------------------------------------------------------------------------------

    def _chunk_plan(self, job: Prepared) -> list[Chunk]:
        c = self.chunking
        total = job.plan.frame_count
        max_len = chunk_length(c.seconds, float(job.plan.fps)) if c else 0
        if c is None or max_len <= 0 or total < max_len * 3 // 2:  # short: whole, see Chunking
            return [Chunk(0, 0, total)]
        max_len = shared_length(max_len, total, c.sharers or c.workers)
        fps = float(job.plan.fps)
        found = list(job.cuts) if job.cuts is not None else detect_cuts(job.src)
        # a chunk starting a few source frames after a keyframe reads its context (the frames
        # before its first one that the temporal stages look at) without decoding a whole GOP
        margin = SEEK_MARGIN / float(job.media.fps or 24)
        # read by the probe with the packet times (none where it could not read them)
        keys = [t - job.media.start_time + margin for t in job.media.keyframes or ()]
        return plan_chunks(
            total,
            max_len=max_len,
            min_len=max(1, max_len // 2),
            cuts=map_cuts(found, fps, total),
            seeks=map_cuts(keys, fps, total),
            taper=c.sharers or c.workers,
        )

    def _encode_chunked(self, job: Prepared, video: Path, chunks: list[Chunk]) -> None:
        """Write the plan, work through its chunks (with ``chunking.workers`` local threads;
        other workers may take some too), then join them frame-exactly into ``video``."""
        c = self.chunking
        assert c is not None
        folder = job.work / "chunks"
        folder.mkdir(exist_ok=True)
        suffix = C.intermediate_suffix(self.preset)

        def task(ch: Chunk, tag: str) -> ChunkTask:
            stem = f"{ch.index:05d}.{tag}" if tag else f"{ch.index:05d}"
            out, partial = folder / f"{stem}{suffix}", folder / f"{stem}.partial{suffix}"
            vs_cmd, enc_cmd = self._commands(job, str(partial), ch.start, ch.end)
            return ChunkTask(ch.index, ch.start, ch.end, vs_cmd, enc_cmd, str(partial), str(out))

        # the plan: the script, each chunk's commands and what their inputs hold (a LUT
        # rewritten by a new assessment, a replaced source or model), so an earlier run's
        # chunk is taken only when it is this plan's picture
        drafts = [task(ch, "") for ch in chunks]
        plan_key = hashlib.sha256(
            "\0".join(
                [job.script.read_text(), *input_identities(drafts[0].vspipe)]
                + [plan_form(t).to_json() for t in drafts]
            ).encode()
        ).hexdigest()[:16]
        # each chunk file is named by its plan: a file another plan left (settings changed
        # since a run was stopped) is never taken for this one's, only removed
        tasks = [task(ch, plan_key[:10]) for ch in chunks]
        rows = c.store.plan(c.job, plan_key, tasks)
        ours = {Path(p).name for t in tasks for p in (t.output, t.partial)}
        for old in folder.iterdir():
            if old.name not in ours:
                with contextlib.suppress(OSError):
                    old.unlink()
        already = sum(1 for r in rows if r.state == "done")
        total = job.plan.frame_count
        log.info(
            "%d chunks of about %.1f s (%d done by an earlier run)",
            len(rows),
            total / len(rows) / float(job.plan.fps),
            already,
        )
        errors: list[BaseException] = []
        threads = self._start_chunk_threads(errors)
        try:
            self._watch_chunks(c, tasks, threads, errors)
        except BaseException as exc:
            # the job ends here: its chunk threads stop with it (their chunks go back to the
            # queue) before the worker takes its next job on the same hosts
            self.cancel()
            deadline = time.monotonic() + STOP_WAIT_S
            for th in threads:
                th.join(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(Exception):  # queue show lists them after the job; one
                # another worker still runs ends with it (a stopped job's do not go on)
                rows = [
                    dataclasses.replace(r, state="stopped") if r.state == "running" else r
                    for r in c.store.rows(c.job)
                ]
                write_chunk_record(job.work, c.job, rows)
            if isinstance(exc, ChunkFailed):  # a rerun tries every chunk again (the ones
                c.store.forget(c.job)  # done are taken from their files, named by the plan)
            raise
        join_chunks([(Path(t.output), t.frames) for t in tasks], video, fps=job.plan.fps)
        for t in tasks:
            with contextlib.suppress(FileNotFoundError):
                Path(t.output).unlink()
        write_chunk_record(job.work, c.job, c.store.rows(c.job))  # queue show lists them after
        c.store.forget(c.job)

    def _start_chunk_threads(self, errors: list[BaseException]) -> list[threading.Thread]:
        c = self.chunking
        assert c is not None
        threads = [
            threading.Thread(  # in a copy of the caller's context: its log lines' job
                target=contextvars.copy_context().run,
                args=(self._chunk_worker, i, errors),
                name=f"chunks/{i}",
                daemon=True,
            )
            for i in range(max(1, c.workers))
        ]
        for th in threads:
            th.start()
        return threads

    def _watch_chunks(
        self,
        c: Chunking,
        tasks: list[ChunkTask],
        threads: list[threading.Thread],
        errors: list[BaseException],
    ) -> None:
        """The job's progress (summed over its chunks) until every chunk is done; raises when
        one fails for good, a chunk thread fails, or the job is stopped. A chunk that comes
        back to the queue after the job's own threads ran out of chunks (another worker's
        attempt failed, or that worker died) is taken by new threads (``threads`` is
        extended): otherwise only a free worker would take it, and a busy or paused queue
        has none."""
        total = sum(t.frames for t in tasks)
        started, base = time.monotonic(), None
        while True:
            rows = c.store.rows(c.job)
            done = sum(r.frames if r.state == "done" else r.frame for r in rows)
            base = done if base is None else base
            elapsed = time.monotonic() - started
            self.progress(
                Progress("encode", done, total, (done - base) / elapsed if elapsed else 0)
            )
            failed = [r for r in rows if r.state == "failed"]
            if failed:
                self.cancel()
                raise ChunkFailed(failed[0], _chunk_report(failed[0]))
            if errors:
                raise errors[0]
            if self.should_stop():
                self.cancel()
                raise Cancelled("cancelled while encoding chunks.")
            alive = [th for th in threads if th.is_alive()]
            if not alive and all(r.state == "done" for r in rows):
                break
            if not alive and any(r.state == "queued" for r in rows):
                threads += self._start_chunk_threads(errors)
            if alive:  # back at once when the last local chunk ends, not up to 0.5 s later
                alive[0].join(timeout=0.5)
            else:
                time.sleep(0.5)  # the rest is in other workers' hands

    def _chunk_worker(self, i: int, errors: list[BaseException]) -> None:
        """One local worker on this job's chunks: claim, run, check, mark; a failed attempt
        goes back to the queue until ``max_attempts``."""
        c = self.chunking
        assert c is not None
        name = f"{c.worker}/{i}" if c.workers > 1 else c.worker
        try:
            while not self._halted():  # stopped, or the job cancelled (a chunk failed)
                if c.place is None:
                    with self._local_slot(i) as env:  # a free slot of this machine, then a chunk
                        row = c.store.claim(name, job=c.job)
                        if row is None:
                            return
                        lost = run_claimed_chunk(
                            c.store, row, self._pipe_in(env), max_attempts=c.max_attempts
                        )
                else:
                    with c.place(self._halted) as slot:  # a free slot elsewhere, then a chunk
                        # the chunk after the one this slot's host ran last, where there is
                        # one: the host goes on reading the script it has open there (no seek)
                        after = self._last_on.get(slot.name)
                        where = f"{name}@{slot.name}" if slot.name else name
                        row = c.store.claim(where, job=c.job, after=after)
                        if row is None:
                            return
                        self._last_on[slot.name] = (row.job, row.index)
                        lost = run_claimed_chunk(
                            c.store,
                            row,
                            None,  # run_task runs the whole chunk there
                            max_attempts=c.max_attempts,
                            run_task=stoppable(slot.run, self._halted),
                        )
                if lost:  # the job fails: its other chunks stop, this thread takes no more
                    self.cancel()
                    return
        except Cancelled as exc:
            if not self._halted():  # not our stop: the executor gave up (cluster gone)
                errors.append(exc)
        except BaseException as exc:  # reported by the job's loop
            errors.append(exc)

    @contextlib.contextmanager
    def _local_slot(self, i: int) -> Iterator[dict[str, str] | None]:
        """The children's environment for local chunk worker ``i``: a slot taken from the
        shared pool for as long as the chunk runs, or worker ``i``'s own slot."""
        c = self.chunking
        if c is not None and c.slots is not None:
            with c.slots.take(self._halted) as slot:
                yield slot.env()
        else:
            yield c.envs[i] if c is not None and i < len(c.envs) else None

    def _pipe_in(self, env: dict[str, str] | None) -> PipeRunner:
        def run_pipe(first, second, total, on_frames):  # type: ignore[no-untyped-def]
            self._run_pipe(first, second, total, on_frames, env=env)

        return run_pipe

    def audio_ahead(self, src: Path) -> AheadAudio:
        """Make ``src``'s delivered audio before its script is checked (while its batch is
        assessed, when BestSource's one decoder leaves cores idle), for the duration its plan
        gives. :meth:`run` takes it when the checked duration is the same, and makes its own
        otherwise (or when this failed)."""
        src = Path(src).absolute()
        before = _identity(src)  # before it is read: a copy still growing never matches
        media = probe(src)
        plan = plan_script(self.preset, media)
        work = self._job_dir(src)
        # named like a run's intermediates: one a hard kill leaves is swept with them
        out = work / f"audio.{os.getpid()}.{time.monotonic_ns()}.mov"
        started = time.monotonic()
        try:
            made = self._make_audio(media, plan, src, out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            raise
        return AheadAudio(_audio_key(before, plan), made, time.monotonic() - started)

    def _audio(self, job: Prepared, out: Path, timings: list[StageTiming]) -> Path | None:
        """The delivered audio into ``out`` (loudness measured first where the preset
        normalises), or None when the output has none. Runs beside the encode; takes the
        audio made ahead when there is one for this duration."""
        ready = self._claim_ahead(_audio_key(_identity(job.src), job.plan))
        if ready is not None:
            log.info("%s: audio made while the batch was assessed", job.src.name)
            if ready.path is None:
                return None
            os.replace(ready.path, out)
            timings.append(StageTiming("audio", ready.seconds))
            return out
        started = time.monotonic()
        made = self._make_audio(job.media, job.plan, job.src, out)
        if made is not None:
            timings.append(StageTiming("audio", time.monotonic() - started))
        return made

    def _claim_ahead(self, key: tuple[object, ...]) -> AheadAudio | None:
        """The audio made ahead, when it is for ``key``; None when there is none, it had not
        started (it is cancelled: this run makes it), it failed, or it is for another
        duration (it is deleted)."""
        job = self.ahead
        if job is None:
            return None
        try:  # self.ahead stays set while it is waited for: cancel() kills its ffmpeg
            if job.future.cancel():
                return None
            while True:
                if self._halted():
                    job.maker.cancel()  # its ffmpeg ends now; the wait below is short
                try:
                    ready = job.future.result(timeout=0.25)
                    break
                except TimeoutError:
                    continue
                except Exception as exc:
                    if self._halted():
                        raise Cancelled("cancelled while the audio was made.") from exc
                    # made again by this run, where a failure counts
                    log.info("the audio made ahead failed (%s); making it again", exc)
                    return None
        finally:
            self.ahead = None
        if ready.key == key:
            return ready
        log.info("the audio made ahead is for another duration; making it again")
        ready.discard()
        return None

    def _drop_ahead(self) -> None:
        """Delete the audio made ahead that this run did not take (it failed first)."""
        drop_ahead(self.ahead)
        self.ahead = None

    def _make_audio(self, media: MediaInfo, plan: ScriptPlan, src: Path, out: Path) -> Path | None:
        if not self._expects_audio(media):
            return None  # no loudness measured for an output without audio
        ffmpeg = find_tool("ffmpeg")
        loudness = None
        if self.preset.audio.loudness_lufs is not None and media.has_audio:
            cmd = C.loudness_measure_command(
                self.preset,
                media,
                src=str(src),
                duration=plan.frame_count / float(plan.fps),
                ffmpeg=ffmpeg,
            )
            loudness = C.parse_loudnorm_json(self._run_one(cmd, "loudness measurement"))
        cmd = C.audio_command(
            self.preset,
            media,
            plan,
            src=str(src),
            output=str(out),
            loudness=loudness,
            ffmpeg=ffmpeg,
        )
        if cmd is None:
            return None
        self._run_one(cmd, "audio")
        return out

    def _mux(self, video: Path, audio: Path | None, out: Path) -> None:
        self.progress(Progress("mux"))
        cmd = C.mux_command(
            self.preset,
            video=str(video),
            audio=None if audio is None else str(audio),
            output=str(out),
            ffmpeg=find_tool("ffmpeg"),
        )
        self._run_one(cmd, "mux")

    def _draw_still(
        self, job: Prepared, output: Path, png: Path, timings: list[StageTiming]
    ) -> bool:
        """``NAME.compare.png``, delivered beside the output: source and result side by side
        at the middle of the clip, drawn into ``png`` from ``output`` (the muxed file, while
        it is checked). Only for the eye, so a failure is logged, not fatal: False."""
        src, plan, media, started = job.src, job.plan, job.media, time.monotonic()
        at, height = plan.frame_count / float(plan.fps) / 2, min(540, plan.height)
        tile_w, tile_h = C.still_tile(height)  # the 1:1 crop's size
        window = (min(1.0, tile_w / plan.width), min(1.0, tile_h / plan.height))
        cmd = C.still_command(
            src=str(src),
            output=str(output),
            png=str(png),
            at_seconds=at,
            height=height,
            ffmpeg=find_tool("ffmpeg"),
            # where the detail is, not a blurred centre; only where the source fills the frame
            # as it does the still's source tile (no bars, no blurred fill beside it)
            focus=detail_focus(output, at, window) if _fills(media, plan) else (0.5, 0.5),
        )
        try:
            self._run_one(cmd, "before/after still")
        except (EncodeError, OSError) as exc:
            log.warning("no before/after still for %s: %s", src.name, exc)
            with contextlib.suppress(FileNotFoundError):
                png.unlink()
            return False
        timings.append(StageTiming("still", time.monotonic() - started))
        return True

    @contextlib.contextmanager
    def _timed(self, stage: str, timings: list[StageTiming]):  # type: ignore[no-untyped-def]
        if self.should_stop():
            raise Cancelled(f"cancelled before {stage}.")
        self.progress(Progress(stage))
        t0 = time.monotonic()
        yield
        timings.append(StageTiming(stage, time.monotonic() - t0))
        log.debug("stage %s took %.2fs", stage, timings[-1].seconds)


def _kill(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for proc in procs:
        proc.wait()


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a long clip is split: chunks of about ``seconds`` of output (a clip shorter than
    1.5 chunks runs whole: a chunk costs a vspipe start, script load and model load, seconds
    that only pay off on long clips), planned into ``store`` under the key ``job``, worked on
    by ``workers`` local threads named after ``worker`` (and by any other worker sharing the
    store), each chunk tried up to ``max_attempts`` times. When ``sharers`` workers (0:
    ``workers``) may share the clip, its chunks are shorter, down to a quarter of ``seconds``,
    so each of them gets several (:func:`~vs_scripts.plan.chunks.shared_length`)."""

    store: ChunkStore
    job: str
    seconds: float
    workers: int = 1
    sharers: int = 0  # the workers that may take its chunks (a daemon's helpers), 0: workers
    worker: str = "local"
    max_attempts: int = 3
    envs: tuple[dict[str, str], ...] = ()  # local worker i's children's environment (its slot)
    slots: SlotPool | None = None  # instead: this machine's slots, shared with other jobs
    place: Placer | None = None  # chunks run elsewhere (a cluster): waits for a free slot there
    always: bool = False  # even a short clip is one chunk (run where ``place`` puts it)
    check: ScriptCheck | None = None  # a warm host checks the script instead of vspipe --info


ChunkRunner = Callable[[ChunkTask, Callable[[int, float], None]], None]
#: (the ``vspipe --info`` command, should_stop) -> the script's frame count; raises
#: EncodeError with the script's error as vspipe would
ScriptCheck = Callable[[Sequence[str], Callable[[], bool]], int]


class SlotPool:
    """This machine's device slots, shared by the jobs one process runs at once: an encode
    (a chunk or a whole clip) holds a free slot while it runs, so N slots never run more than
    N encodes, whichever clips they belong to, and a clip's probe, mux and checks run beside
    other clips' encodes."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self._free = list(slots)
        self.size = len(self._free)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def take(self, should_stop: Callable[[], bool]) -> Iterator[Slot]:
        with self._cond:
            while not self._free:
                if should_stop():
                    raise Cancelled("cancelled while waiting for a free slot.")
                self._cond.wait(timeout=0.2)
            slot = self._free.pop(0)
        try:
            yield slot
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()


@dataclass(frozen=True, slots=True)
class ChunkSlot:
    """A free place to run one chunk: its name (recorded in the chunk's row after the
    worker's, e.g. ``ray:10.0.0.5:3f2a9c1d:a0``; empty for the worker's own host) and its
    runner, which runs the whole task there (commands, frame check, rename) and raises on
    failure."""

    name: str
    run: ChunkRunner


#: an executor: waits (until ``should_stop``) for a free slot and holds it while in use
Placer = Callable[[Callable[[], bool]], contextlib.AbstractContextManager[ChunkSlot]]


def _fills(media: MediaInfo, plan: ScriptPlan) -> bool:
    """Whether the output shows the source's picture edge to edge at the source's aspect."""
    w, h = display_size(media)
    return h > 0 and plan.height > 0 and abs(w / h - plan.width / plan.height) < 0.01


def plan_form(task: ChunkTask) -> ChunkTask:
    """``task`` as its plan sees it: the encoder's thread count left out, so a job taken up
    again by a worker with another share of the cores (16 cores over 3 slots: 6, 5, 5) keeps
    its finished chunks. The settings are the same; x265's frame threads follow its pool, so
    the bits of a chunk may differ, each one still a closed-GOP stream of those settings."""
    encoder = [re.sub(r"(?<![\w-])pools=\d+", "pools=*", a) for a in task.encoder]
    for i, a in enumerate(encoder[:-1]):
        if a == "-threads":
            encoder[i + 1] = "*"
    return dataclasses.replace(task, encoder=encoder)


#: an input file up to this size is identified by its content (a LUT: rewritten with the same
#: table when its batch is assessed again), a larger one by its size and time
IDENTIFY_BY_CONTENT = 8 << 20


def input_identities(vspipe: Sequence[str]) -> list[str]:
    """What the files a ``vspipe`` command's ``--arg`` values name hold: ``NAME=`` with a
    digest of a small file's content, or a larger one's size and modification time."""
    out = []
    for flag, arg in itertools.pairwise(vspipe):
        if flag != "--arg":
            continue
        name, _, value = arg.partition("=")
        path = Path(value)
        try:
            st = path.stat()
            if not path.is_file():
                continue
            if st.st_size <= IDENTIFY_BY_CONTENT:
                what = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            else:
                what = f"{st.st_size}-{st.st_mtime_ns}"
        except (OSError, ValueError):
            continue
        out.append(f"{name}={what}")
    return out


def stoppable(run: ChunkRunner, should_stop: Callable[[], bool]) -> ChunkRunner:
    """``run`` whose progress callback raises :class:`Cancelled` once ``should_stop`` (a
    runner calls it at least every second and stops its chunk, host or remote, when it
    raises)."""

    def run_task(task: ChunkTask, on_progress: Callable[[int, float], None]) -> None:
        def checked(frame: int, fps: float) -> None:
            if should_stop():
                raise Cancelled("cancelled while encoding chunks.")
            on_progress(frame, fps)

        run(task, checked)

    return run_task


def run_claimed_chunk(
    store: ChunkStore,
    row: ChunkRow,
    run_pipe: PipeRunner | None,
    *,
    max_attempts: int,
    run_task: ChunkRunner | None = None,
) -> bool:
    """Run a claimed chunk (with ``run_pipe`` here, or all of it by ``run_task``: a warm host
    or a cluster's) and record the outcome (done, or a failed attempt). Returns True when
    the chunk failed for good (its job fails: take no more of its chunks)."""
    last = [0.0]

    def on_progress(frame: int, fps: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            store.progress(row, frame, fps)

    try:
        if run_task is not None:
            run_task(row.task, on_progress)
        else:
            assert run_pipe is not None
            run_chunk(row.task, run_pipe, on_progress=on_progress)
    except Cancelled:
        store.requeue(row)
        raise
    except Exception as exc:
        if not store.holds(row):  # its job let it go meanwhile (cancelled, or failed on
            # another chunk, its files removed): not this chunk's failure, nothing to put back
            log.info("chunk %d of %s stopped: its job no longer needs it", row.index, row.job)
            return False
        detail = exc.report() if isinstance(exc, EncodeError) else repr(exc)
        if store.failed(row, f"{exc}\n{detail}", max_attempts=max_attempts):
            log.error("chunk %d of %s failed for good: %s", row.index, row.job, exc)
            return True
        log.warning(
            "chunk %d of %s failed (%s); it goes back to the queue", row.index, row.job, exc
        )
        return False
    store.done(row)
    return False


def _chunk_report(row: ChunkRow) -> str:
    return (
        f"chunk {row.index}: output frames {row.start}-{row.end - 1}, {row.attempts} "
        f"attempt(s), last on {row.worker or 'a worker'}\n\n{row.error or ''}"
    )


def detect_cuts(src: Path, *, threshold: float = 0.3) -> list[float]:
    """Scene cuts in the source (seconds), from ffmpeg's scene score on small frames: where a
    chunk boundary costs nothing. Only run when a clip is chunked."""
    res = run_capture(
        [
            find_tool("ffmpeg"),
            "-hide_banner",
            "-nostdin",
            "-i",
            media_arg(src),
            "-an",
            "-vf",
            f"scale=64:36,select='gt(scene,{threshold})',showinfo",
            "-f",
            "null",
            "-",
        ],
        timeout=3600,
    )
    return [float(m.group(1)) for m in re.finditer(r"pts_time:([\d.]+)", res.stderr)]


def _sweep_orphans(work: Path) -> None:
    """Remove the intermediates (``video.PID.N.*``, ``audio.PID.N.mov``) of runs whose process
    is gone (a hard kill leaves them); a live run's files, even another process's, are kept."""
    for path in work.glob("*.*.*.*"):
        kind, pid = path.name.split(".")[:2]
        if kind in ("video", "audio") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()


#: source frames after a keyframe where a chunk may start: BestSource's seek preroll (20)
#: plus more than any stage's reach back (the exposure stabiliser's 4, the temporal
#: denoisers' radius), so its first decoded frame is that keyframe's GOP, not the one before
SEEK_MARGIN = 32


#: how long a job that ends (a chunk failed for good, a stop) waits for its chunk threads to
#: stop theirs: a host's chunk stops at its next progress line (every half second), a child
#: process when it is killed
STOP_WAIT_S = 30.0


_SETPRIV = shutil.which("setpriv")


def with_parent(cmd: Sequence[str]) -> list[str]:
    """Children die with us, even on SIGKILL (Linux parent-death signal via util-linux
    setpriv), so a hard-killed daemon leaves no encoder running."""
    if _SETPRIV and sys.platform.startswith("linux"):
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd]
    return list(cmd)


def pump(stream, sink: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    """Read a child's stderr, splitting on CR and LF (progress lines use CR)."""
    buf = b""
    for chunk in iter(
        lambda: stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096), b""
    ):
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        for line in lines:
            if line.strip():
                sink(line.decode("utf-8", "replace"))
    if buf.strip():
        sink(buf.decode("utf-8", "replace"))


def _encode_hint(codes: list[int | None], tails: list[deque[str]]) -> str:
    if codes[0] not in (0, None) and codes[1] in (0, None):
        return "the VapourSynth script failed; its error is in the vspipe output above"
    if codes[0] in (-13, 1) and codes[1] not in (0, None):
        return "the encoder stopped first (vspipe then lost its pipe); see the encoder's error"
    return "check the stderr tails in this report"


# -- the one check ----------------------------------------------------------------------------


def check_output(
    path: Path, preset: Preset, plan: ScriptPlan, *, expect_audio: bool, name: str
) -> Report:
    """Measure ``path`` once and check it against the plan (always) and the preset's QC (when
    on). Raises :class:`VerifyError` when a required check fails, :class:`QcError` when only
    delivery checks do; returns the report when everything passed."""
    qc = preset.qc.enabled
    facts = measure(path, with_loudness=qc)
    expected = Expected(plan.frame_count, plan.width, plan.height, plan.fps, expect_audio)
    report = evaluate(facts, preset, file=name, expected=expected, qc=qc)
    if not report.verified:
        raise VerifyError(
            str(path), [f"{c.name}: {c.detail}" for c in report.failures if c.required]
        )
    if not report.passed:
        raise QcError(report)
    return report


def _raise_if_undecodable(src: Path, stderr: str) -> None:
    m = re.search(r"load_source: cannot decode the clip \((.*)\)", stderr)
    if m:
        raise ProbeError(
            f"{src}: cannot be decoded ({m.group(1).strip()}); the file may be truncated "
            "or damaged: copy it again."
        )


@dataclass(frozen=True, slots=True)
class AheadAudio:
    """A clip's audio made ahead (:meth:`Pipeline.audio_ahead`): for the source and output
    duration in ``key``; ``path`` None when the output has no audio."""

    key: tuple[object, ...]
    path: Path | None
    seconds: float

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class AudioJob:
    """Audio being made ahead: its future, and the pipeline whose child (ffmpeg) makes it."""

    future: Future[AheadAudio]
    maker: Children


def drop_ahead(job: AudioJob | None) -> None:
    """Audio made ahead that no run will take: not started, cancelled; being made, its
    ffmpeg killed; made, deleted."""
    if job is None or job.future.cancel():
        return
    job.maker.cancel()
    with contextlib.suppress(Exception):
        job.future.result().discard()


def _audio_key(identity: tuple[int, int], plan: ScriptPlan) -> tuple[object, ...]:
    """What a clip's delivered audio depends on beyond the preset: the source (its size and
    time, :func:`_identity`) and the output's duration."""
    return (*identity, plan.frame_count, str(plan.fps))


def _identity(src: Path) -> tuple[int, int]:
    st = src.stat()
    return st.st_size, st.st_mtime_ns


def _check_target(src: Path, output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise AppError(f"{output}: already exists; choose another -o path or pass --overwrite.")
    if output.resolve() == src.resolve():
        raise AppError(f"{output}: is the source clip; the source is never overwritten.")
    output.parent.mkdir(parents=True, exist_ok=True)
