"""One clip -> one verified deliverable: probe, render, encode, mux, verify, rename.

The source is only ever read. The output is written under a hidden temporary name in the
destination folder and renamed into place only after it passed verification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
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
from collections.abc import Callable, Sequence
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
from daemon.core.tools import find_tool, run_capture, tail
from daemon.engine import commands as C
from daemon.engine.checks import Expected, Report, evaluate
from daemon.engine.measure import measure
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import Preset
from vs_scripts.plan.render import ScriptPlan, model_args, plan_script, render_script

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


class Pipeline:
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
    ) -> None:
        self.preset = preset
        self.work_root = work_root or default_work_root()
        self.progress = progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: False)
        self.threads = threads
        self._procs: list[subprocess.Popen[bytes]] = []
        self._models: dict[str, str] = {}
        self._lock = threading.Lock()

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
        # absolute: vspipe runs the script with its own folder as the working directory
        src = Path(src).absolute()
        output = Path(output)
        _check_target(src, output, overwrite)
        before = _identity(src)
        timings: list[StageTiming] = []
        job = self.prepare(src, plan, timings)
        # unique per run: a child orphaned by a hard kill can never write into a later run's file
        video = (
            job.work
            / f"video.{os.getpid()}.{time.monotonic_ns()}{C.intermediate_suffix(self.preset)}"
        )
        partial = partial_path(output)
        try:
            with self._timed("encode", timings):
                self._encode(job, video)
            with self._timed("mux", timings):
                self._mux(job, video, partial)
            with self._timed("verify", timings):
                report = self._verify(job, partial, output.name)
            if output.exists() and not overwrite:
                raise AppError(f"{output}: appeared while encoding; not overwriting it.")
            if _identity(src) != before:
                raise SourceChanged(
                    f"{src.name} changed while it was processed (still being copied?); "
                    "its output was not delivered"
                )
            os.replace(partial, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            with contextlib.suppress(FileNotFoundError):
                video.unlink()
        # the output is delivered: nothing after this point may fail the job
        self._deliver_sidecars(output, plan, report, job, timings)
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
        # absolute: vspipe runs the script from its own folder, so a relative path would nest
        work = job_work_dir(self.work_root.absolute(), src, self.preset)
        work.mkdir(parents=True, exist_ok=True)
        write_probe(work, media)
        with self._timed("render", timings):
            splan = plan_script(self.preset, media)
            self._models = self._model_paths(splan)
            if lut is not None:
                self._models["lut"] = str(Path(lut).resolve())
            script = work / SCRIPT
            cache = work / "index"
            cache.mkdir(exist_ok=True)
            atomic_write(
                script,
                self._reproduction(script, src, cache) + render_script(self.preset, media, tuning),
            )
            frames = self._check_script(script, src, cache, splan)
            splan = dataclasses.replace(splan, frame_count=frames)
        return Prepared(src, media, splan, work, script, cache)

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
        job: Prepared,
        timings: list[StageTiming],
    ) -> None:
        """Best-effort files beside a delivered output (assessment, LUT, QC report, still): a
        failure is logged, never fails the job."""
        files = dict(plan.sidecars()) if plan else {}
        try:
            for suffix, path in files.items():
                atomic_write(output.with_name(output.stem + suffix), path.read_bytes())
            if self.preset.qc.enabled:
                atomic_write(output.with_name(output.stem + QC_SUFFIX), report.to_json())
        except OSError as exc:
            log.warning(
                "%s: delivered, but a file beside it could not be written (%s)", output.name, exc
            )
        with self._timed("still", timings):
            self._still(job.src, output, job.plan, job.work)

    def cancel(self) -> None:
        """Kill the running children (safe from another thread or a signal handler)."""
        with self._lock:
            for proc in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    # -- stages -------------------------------------------------------------------------------

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
        """``vspipe --info``: the script loads and gives the planned frame count."""
        cmd = C.vspipe_command(
            find_tool("vspipe"),
            str(script),
            src=str(src),
            cache=str(cache),
            extra=self._models,
            info=True,
        )
        res = run_capture(cmd, timeout=600)
        if res.returncode != 0:
            m = re.search(r"load_source: cannot decode the clip \((.*)\)", res.stderr)
            if m:
                raise ProbeError(
                    f"{src}: cannot be decoded ({m.group(1).strip()}); the file may be truncated "
                    "or damaged: copy it again."
                )
            raise EncodeError(
                "script check",
                [cmd],
                [res.returncode],
                [tail(res.stderr)],
                hint=f"open {script} in vspreview or run the command in the report to see why",
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
        vspipe_cmd = C.vspipe_command(
            find_tool("vspipe"),
            str(job.script),
            src=str(job.src),
            cache=str(job.cache),
            extra=self._models,
        )
        enc_cmd = C.encoder_command(
            self.preset,
            job.plan,
            output=str(video),
            ffmpeg=find_tool("ffmpeg"),
            threads=self.threads,
        )
        total = job.plan.frame_count
        self.progress(Progress("encode", 0, total))
        self._run_pipe(vspipe_cmd, enc_cmd, total)
        if not video.exists() or video.stat().st_size == 0:
            raise EncodeError(
                "encode",
                [vspipe_cmd, enc_cmd],
                [0, 0],
                ["", "no output written"],
            )

    def _run_pipe(self, first: Sequence[str], second: Sequence[str], total: int) -> None:
        if self.should_stop():
            raise Cancelled("cancelled before encoding.")
        p1 = subprocess.Popen(
            _with_parent(first),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            p2 = subprocess.Popen(
                _with_parent(second),
                stdin=p1.stdout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except BaseException:
            p1.kill()
            p1.wait()
            raise
        assert p1.stdout is not None
        p1.stdout.close()  # so vspipe gets SIGPIPE if the encoder dies
        with self._lock:
            self._procs = [p1, p2]
        tails = [deque[str](maxlen=40), deque[str](maxlen=40)]
        started = time.monotonic()

        def on_line(line: str) -> None:
            m = _FRAME_RE.search(line)
            if m:
                done = int(m.group(1))
                elapsed = time.monotonic() - started
                fps = done / elapsed if elapsed > 0 else 0.0
                self.progress(Progress("encode", done, int(m.group(2)) or total, fps))
            else:
                tails[0].append(line)

        readers = [
            threading.Thread(target=_pump, args=(p1.stderr, on_line), daemon=True),
            threading.Thread(target=_pump, args=(p2.stderr, tails[1].append), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            while p2.poll() is None or p1.poll() is None:
                if self.should_stop():
                    self.cancel()
                    p1.wait()
                    p2.wait()
                    raise Cancelled("cancelled while encoding.")
                time.sleep(0.1)
        except BaseException:
            self.cancel()
            p1.wait()
            p2.wait()
            raise
        finally:
            for t in readers:
                t.join(timeout=5)
            with self._lock:
                self._procs = []
        codes = [p1.returncode, p2.returncode]
        if codes != [0, 0]:
            raise EncodeError(
                "encode",
                [first, second],
                codes,
                ["\n".join(t) for t in tails],
                hint=_encode_hint(codes, tails),
            )

    def _mux(self, job: Prepared, video: Path, out: Path) -> None:
        media, plan, src = job.media, job.plan, job.src
        ffmpeg = find_tool("ffmpeg")
        self.progress(Progress("mux"))
        loudness = None
        duration = plan.frame_count / float(plan.fps)
        if (
            self.preset.audio.loudness_lufs is not None
            and media.has_audio
            and (self.preset.audio.codec != "none")
        ):
            cmd = C.loudness_measure_command(
                self.preset, media, src=str(src), duration=duration, ffmpeg=ffmpeg
            )
            res = self._run_one(cmd, "loudness measurement")
            loudness = C.parse_loudnorm_json(res)
        cmd = C.mux_command(
            self.preset,
            media,
            plan,
            video=str(video),
            src=str(src),
            output=str(out),
            loudness=loudness,
            ffmpeg=ffmpeg,
        )
        self._run_one(cmd, "mux")

    def _still(self, src: Path, output: Path, plan: ScriptPlan, work: Path) -> None:
        """``NAME.compare.png`` beside the output: source and result side by side at the
        middle of the clip. The output is already verified and delivered, so a failure here
        is logged, not fatal."""
        tmp = work / f"compare.{os.getpid()}.png"
        cmd = C.still_command(
            src=str(src),
            output=str(output),
            png=str(tmp),
            at_seconds=plan.frame_count / float(plan.fps) / 2,
            height=min(540, plan.height),
            ffmpeg=find_tool("ffmpeg"),
        )
        try:
            self._run_one(cmd, "before/after still")
            os.replace(tmp, still_beside(output))
        except (EncodeError, OSError) as exc:
            log.warning("no before/after still for %s: %s", output.name, exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _run_one(self, cmd: Sequence[str], stage: str) -> str:
        if self.should_stop():
            raise Cancelled(f"cancelled before {stage}.")
        proc = subprocess.Popen(
            _with_parent(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with self._lock:
            self._procs = [proc]
        try:
            _, err = proc.communicate()
        finally:
            with self._lock:
                self._procs = []
        text = err.decode("utf-8", "replace")
        if proc.returncode != 0:
            if self.should_stop():
                raise Cancelled(f"cancelled during {stage}.")
            raise EncodeError(stage, [cmd], [proc.returncode], [tail(text)])
        return text

    @contextlib.contextmanager
    def _timed(self, stage: str, timings: list[StageTiming]):  # type: ignore[no-untyped-def]
        if self.should_stop():
            raise Cancelled(f"cancelled before {stage}.")
        self.progress(Progress(stage))
        t0 = time.monotonic()
        yield
        timings.append(StageTiming(stage, time.monotonic() - t0))
        log.debug("stage %s took %.2fs", stage, timings[-1].seconds)


_SETPRIV = shutil.which("setpriv")


def _with_parent(cmd: Sequence[str]) -> list[str]:
    """Children die with us, even on SIGKILL (Linux parent-death signal via util-linux
    setpriv), so a hard-killed daemon leaves no encoder running."""
    if _SETPRIV and sys.platform.startswith("linux"):
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd]
    return list(cmd)


def _pump(stream, sink: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
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


def _identity(src: Path) -> tuple[int, int]:
    st = src.stat()
    return st.st_size, st.st_mtime_ns


def _check_target(src: Path, output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise AppError(f"{output}: already exists; choose another -o path or pass --overwrite.")
    if output.resolve() == src.resolve():
        raise AppError(f"{output}: is the source clip; the source is never overwritten.")
    output.parent.mkdir(parents=True, exist_ok=True)
