"""One clip -> one verified deliverable: probe, render, encode, mux, verify, rename.

The source is only ever read. The output is written under a hidden temporary name in the
destination folder and renamed into place only after it passed verification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon import commands as C
from daemon.errors import AppError, EncodeError, ProbeError, QcError, VerifyError
from daemon.files import atomic_write
from daemon.measure import measure
from daemon.qc import VIDEO_CODECS, Report, evaluate
from daemon.probe import probe
from daemon.tools import find_tool, run_capture, tail
from vs_scripts.media import MediaInfo
from vs_scripts.preset import Preset
from vs_scripts.render import ScriptPlan, Tuning, model_args, plan_script, render_script

log = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"Frame:\s*(\d+)/(\d+)(?:\s*\(([\d.]+)\s*fps\))?")


STILL_SUFFIX = ".compare.png"


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


def default_work_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "finishline" / "jobs"


def job_work_dir(root: Path, src: Path, preset: Preset) -> Path:
    """A stable folder per (source path, preset) so reruns find the script and index."""
    key = hashlib.sha256(f"{src.resolve()}\0{preset.name}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", src.stem)[:40] or "clip"
    return root / f"{stem}-{preset.name}-{key}"


def partial_path(output: Path) -> Path:
    """Hidden temporary name beside the output (same filesystem, so rename is atomic)."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


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
        self, src: Path, output: Path, *, overwrite: bool = False, tuning: Tuning | None = None,
        lut: Path | None = None, sidecars: dict[str, Path] | None = None,
    ) -> Result:  # fmt: skip
        """Process ``src`` into ``output``. ``tuning``/``lut`` come from the batch assessment;
        ``sidecars`` (suffix -> file) are copied beside the delivered output, e.g.
        ``{".cube": lut, ".assessment.json": ...}``."""
        # absolute: vspipe runs the script with its own folder as the working directory
        src = Path(src).absolute()
        if tuning is not None and tuning.lut and lut is None:
            raise AppError("a colour LUT was planned but no .cube file was given.")
        output = Path(output)
        if output.exists() and not overwrite:
            raise AppError(
                f"{output}: already exists; choose another -o path or pass --overwrite."
            )
        if output.resolve() == src.resolve():
            raise AppError(f"{output}: is the source clip; the source is never overwritten.")
        output.parent.mkdir(parents=True, exist_ok=True)
        timings: list[StageTiming] = []

        with self._timed("probe", timings):
            media = probe(src)
        work = job_work_dir(self.work_root, src, self.preset)
        work.mkdir(parents=True, exist_ok=True)
        (work / "probe.json").write_text(json.dumps(media.to_json(), indent=2) + "\n")

        with self._timed("render", timings):
            plan = plan_script(self.preset, media)
            self._models = self._model_paths(plan)
            script = work / "script.vpy"
            atomic_write(script, render_script(self.preset, media, tuning))
            if lut is not None:
                self._models["lut"] = str(Path(lut).resolve())
            cache = work / "index"
            cache.mkdir(exist_ok=True)
            frames = self._check_script(script, src, cache, plan)
            plan = dataclasses.replace(plan, frame_count=frames)

        # unique per run: a child orphaned by a hard kill can never write into a later run's file
        video = work / f"video.{os.getpid()}.{time.monotonic_ns()}{C.intermediate_suffix(self.preset)}"
        partial = partial_path(output)
        try:
            with self._timed("encode", timings):
                self._encode(script, src, cache, plan, video, frames)
            with self._timed("mux", timings):
                self._mux(media, plan, src, video, partial)
            with self._timed("verify", timings):
                verify_output(partial, self.preset, plan, expect_audio=self._expects_audio(media))
            qc_report = None
            if self.preset.qc.enabled:
                with self._timed("qc", timings):
                    qc_report = quality_control(partial, self.preset, plan, name=output.name)
                    atomic_write(work / "qc.json", qc_report.to_json())
            if output.exists() and not overwrite:
                raise AppError(f"{output}: appeared while encoding; not overwriting it.")
            os.replace(partial, output)
            for suffix, path in (sidecars or {}).items():
                atomic_write(output.with_name(output.stem + suffix), path.read_bytes())
            if qc_report is not None:
                atomic_write(output.with_name(output.stem + ".qc.json"), qc_report.to_json())
            with self._timed("still", timings):
                self._still(src, output, plan, work)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        with contextlib.suppress(FileNotFoundError):
            video.unlink()
        result = Result(output, media, plan, work, script, timings)
        (work / "result.json").write_text(
            json.dumps(
                {
                    "output": str(output),
                    "frames": plan.frame_count,
                    "size": [plan.width, plan.height],
                    "fps": C.fps_text(plan.fps),
                    "timings": {t.stage: round(t.seconds, 3) for t in timings},
                },
                indent=2,
            )
            + "\n"
        )
        return result

    def cancel(self) -> None:
        """Kill the running children (safe from another thread or a signal handler)."""
        with self._lock:
            for proc in self._procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    # -- stages -------------------------------------------------------------------------------

    def _model_paths(self, plan: ScriptPlan) -> dict[str, str]:
        from daemon.models import model_dir, require

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
            find_tool("vspipe"), str(script), src=str(src), cache=str(cache), extra=self._models,
            info=True,
        )  # fmt: skip
        res = run_capture(cmd, timeout=600)
        if res.returncode != 0:
            m = re.search(r"load_source: cannot decode the clip \((.*)\)", res.stderr)
            if m:
                raise ProbeError(
                    f"{src}: cannot be decoded ({m.group(1).strip()}); the file may be truncated "
                    "or damaged: copy it again."
                )
            raise EncodeError(
                "script check", [cmd], [res.returncode], [tail(res.stderr)],
                hint=f"open {script} in vspreview or run the command in the report to see why",
            )  # fmt: skip
        m = re.search(r"^Frames:\s*(\d+)", res.stdout, re.M)
        if not m:
            raise EncodeError("script check", [cmd], [0], [tail(res.stdout + res.stderr)])
        frames = int(m.group(1))
        if abs(frames - plan.frame_count) > 1:
            raise EncodeError(
                "script check", [cmd], [0],
                [f"script gives {frames} frames, planned {plan.frame_count}"],
            )  # fmt: skip
        return frames

    def _encode(
        self, script: Path, src: Path, cache: Path, plan: ScriptPlan, video: Path, total: int
    ) -> None:
        vspipe_cmd = C.vspipe_command(
            find_tool("vspipe"), str(script), src=str(src), cache=str(cache), extra=self._models
        )
        enc_cmd = C.encoder_command(
            self.preset, plan, output=str(video), ffmpeg=find_tool("ffmpeg"), threads=self.threads,
        )  # fmt: skip
        self.progress(Progress("encode", 0, total))
        self._run_pipe(vspipe_cmd, enc_cmd, total)
        if not video.exists() or video.stat().st_size == 0:
            raise EncodeError(
                "encode", [vspipe_cmd, enc_cmd], [0, 0], ["", "no output written"],
            )  # fmt: skip

    def _run_pipe(self, first: Sequence[str], second: Sequence[str], total: int) -> None:
        if self.should_stop():
            raise Cancelled("cancelled before encoding.")
        p1 = subprocess.Popen(
            _with_parent(first), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            p2 = subprocess.Popen(
                _with_parent(second), stdin=p1.stdout, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
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
                "encode", [first, second], codes, ["\n".join(t) for t in tails],
                hint=_encode_hint(codes, tails),
            )  # fmt: skip

    def _mux(self, media: MediaInfo, plan: ScriptPlan, src: Path, video: Path, out: Path) -> None:
        ffmpeg = find_tool("ffmpeg")
        self.progress(Progress("mux"))
        loudness = None
        duration = plan.frame_count / float(plan.fps)
        if self.preset.audio.loudness_lufs is not None and media.has_audio and (
            self.preset.audio.codec != "none"
        ):
            cmd = C.loudness_measure_command(
                self.preset, media, src=str(src), duration=duration, ffmpeg=ffmpeg
            )
            res = self._run_one(cmd, "loudness measurement")
            loudness = parse_loudnorm_json(res)
        cmd = C.mux_command(
            self.preset, media, plan, video=str(video), src=str(src), output=str(out),
            loudness=loudness, ffmpeg=ffmpeg,
        )  # fmt: skip
        self._run_one(cmd, "mux")

    def _still(self, src: Path, output: Path, plan: ScriptPlan, work: Path) -> None:
        """``NAME.compare.png`` beside the output: source and result side by side at the
        middle of the clip. The output is already verified and delivered, so a failure here
        is logged, not fatal."""
        tmp = work / f"compare.{os.getpid()}.png"
        cmd = C.still_command(
            src=str(src), output=str(output), png=str(tmp),
            at_seconds=plan.frame_count / float(plan.fps) / 2, height=min(540, plan.height),
            ffmpeg=find_tool("ffmpeg"),
        )  # fmt: skip
        try:
            self._run_one(cmd, "before/after still")
            os.replace(tmp, output.with_name(output.stem + STILL_SUFFIX))
        except EncodeError as exc:
            log.warning("no before/after still for %s: %s", output.name, exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _run_one(self, cmd: Sequence[str], stage: str) -> str:
        if self.should_stop():
            raise Cancelled(f"cancelled before {stage}.")
        proc = subprocess.Popen(
            _with_parent(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
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
    for chunk in iter(lambda: stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096), b""):
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


def parse_loudnorm_json(stderr: str) -> C.Loudness:
    start = stderr.rfind("{")
    end = stderr.rfind("}")
    if start < 0 or end < start:
        raise AppError("loudness measurement printed no result; is the audio stream decodable?")
    data = json.loads(stderr[start : end + 1])

    def num(key: str) -> float:
        value = float(data[key])
        return value if value > -99 else -99.0  # silence measures -inf

    return C.Loudness(
        num("input_i"), num("input_tp"), num("input_lra"), num("input_thresh"),
        num("target_offset"),
    )  # fmt: skip


# -- verification ------------------------------------------------------------------------------


def quality_control(path: Path, preset: Preset, plan: ScriptPlan, *, name: str) -> Report:
    """Measure ``path`` and check it against the preset's spec; raise :class:`QcError` with
    the whole report when a check fails."""
    report = evaluate(measure(path), preset, file=name, width=plan.width, height=plan.height,
                      fps=plan.fps)  # fmt: skip
    if not report.passed:
        raise QcError(report)
    return report


def verify_output(path: Path, preset: Preset, plan: ScriptPlan, *, expect_audio: bool) -> dict:
    """Check an encoded file against the plan; raise :class:`VerifyError` listing every miss."""
    ffprobe = find_tool("ffprobe")
    res = run_capture(
        [ffprobe, "-v", "error", "-count_packets", "-show_streams", "-show_format",
         "-of", "json", C.media_arg(path)],
    )  # fmt: skip
    if res.returncode != 0:
        raise VerifyError(str(path), [f"ffprobe cannot read it: {tail(res.stderr, 3)}"])
    data = json.loads(res.stdout)
    streams = data.get("streams", [])
    videos = [s for s in streams if s.get("codec_type") == "video"]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    problems: list[str] = []
    if len(videos) != 1:
        raise VerifyError(str(path), [f"expected 1 video stream, found {len(videos)}"])
    v = videos[0]
    frames = int(v.get("nb_read_packets") or 0)
    if frames != plan.frame_count:
        problems.append(f"{frames} frames, expected {plan.frame_count}")
    if (v.get("width"), v.get("height")) != (plan.width, plan.height):
        problems.append(f"size {v.get('width')}x{v.get('height')}, expected {plan.width}x{plan.height}")
    rate = v.get("r_frame_rate", "0/1")
    if rate != C.fps_text(plan.fps):
        num, den = (int(x) for x in rate.split("/"))
        if den == 0 or abs(num / den - float(plan.fps)) > 1e-3:
            problems.append(f"frame rate {rate}, expected {C.fps_text(plan.fps)}")
    expected_codec = VIDEO_CODECS[preset.video.encoder]
    if v.get("codec_name") != expected_codec:
        problems.append(f"video codec {v.get('codec_name')}, expected {expected_codec}")
    names = plan.output_colour.names
    for key, want in (
        ("color_space", names["matrix"]),
        ("color_transfer", names["transfer"]),
        ("color_primaries", names["primaries"]),
        ("color_range", names["range"]),
    ):
        if key == "color_range" and expected_codec == "ffv1" and "color_range" not in v:
            continue  # FFV1 in QuickTime has nowhere to store the range flag
        if v.get(key) != want:
            problems.append(f"{key} is {v.get(key, 'unset')}, expected {want}")
    duration = plan.frame_count / float(plan.fps)
    if expect_audio:
        if len(audios) != 1:
            problems.append(f"expected 1 audio stream, found {len(audios)}")
        else:
            a = audios[0]
            if a.get("codec_name") != preset.audio.codec:
                problems.append(f"audio codec {a.get('codec_name')}, expected {preset.audio.codec}")
            if int(a.get("sample_rate") or 0) != preset.audio.sample_rate:
                problems.append(f"audio rate {a.get('sample_rate')}, expected {preset.audio.sample_rate}")
            adur = float(a.get("duration") or data.get("format", {}).get("duration") or 0)
            if abs(adur - duration) > max(0.05, 1.5 / float(plan.fps)):
                problems.append(f"audio lasts {adur:.3f}s, video {duration:.3f}s")
    elif audios:
        problems.append(f"expected no audio, found {len(audios)} stream(s)")
    if problems:
        raise VerifyError(str(path), problems)
    return data


