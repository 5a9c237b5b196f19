"""Pure argv builders for vspipe, the encoders and the muxer. No I/O: the worker runs them.

Paths enter argv as separate list items (never through a shell), and every file given to an
ffmpeg tool goes through :func:`media_arg` so a name like ``-x.mp4`` or ``a:b.mp4`` is still
read as a file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction

from daemon.core.tools import media_arg
from vs_scripts.plan.errors import AppError
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import Preset
from vs_scripts.plan.render import ScriptPlan, output_colour

PRORES_PROFILE_IDS = {"proxy": 0, "lt": 1, "standard": 2, "hq": 3, "4444": 4}
FFMPEG_PIX_FMTS = {
    "yuv420p": "yuv420p",
    "yuv420p10": "yuv420p10le",
    "yuv422p10": "yuv422p10le",
    "yuv444p10": "yuv444p10le",
}
X265_PROFILES = {
    "yuv420p": "main",
    "yuv420p10": "main10",
    "yuv422p10": "main422-10",
    "yuv444p10": "main444-10",
}
X264_PROFILES = {
    "yuv420p": "high",
    "yuv420p10": "high10",
    "yuv422p10": "high422",
    "yuv444p10": "high444",
}
MUXERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska"}
AAC_PRIMING = 1024  # samples of encoder delay ffmpeg's AAC encoder puts before the audio


def fps_text(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


def gop_length(preset: Preset, fps: Fraction) -> int:
    """Frames between keyframes: the preset's seconds, at least 2 (a one-frame GOP makes an
    intra-only stream, which x265 signals with a different profile: measured at 1 fps)."""
    return max(2, round(float(fps) * preset.video.gop_seconds))


def intermediate_suffix(preset: Preset) -> str:
    """The video file the encoder writes before muxing. QuickTime keeps the exact time base and
    the colour atoms (Matroska rounds timestamps to milliseconds; NUT drops colour tags);
    FFV1 only goes in Matroska."""
    return ".mkv" if preset.video.encoder == "ffv1" else ".mov"


def vspipe_command(
    vspipe: str,
    script: str,
    *,
    src: str,
    cache: str,
    start: int = 0,
    end: int | None = None,
    extra: dict[str, str] | None = None,
    info: bool = False,
) -> list[str]:
    """vspipe writing y4m to stdout for the half-open frame range ``[start, end)``, or with
    ``info`` printing the script's output format and length. ``extra`` adds more
    ``--arg name=value`` pairs (model paths)."""
    cmd = [vspipe, "--info"] if info else [vspipe, "-c", "y4m", "-p"]
    cmd += ["--arg", f"src={src}", "--arg", f"cache={cache}"]
    for name, value in sorted((extra or {}).items()):
        cmd += ["--arg", f"{name}={value}"]
    if start:
        cmd += ["-s", str(start)]
    if end is not None:
        cmd += ["-e", str(end - 1)]  # the one place half-open becomes vspipe's inclusive end
    return [*cmd, script, "-"]


def encoder_command(
    preset: Preset,
    plan: ScriptPlan,
    *,
    output: str,
    ffmpeg: str = "ffmpeg",
    threads: int | None = None,
) -> list[str]:
    """The encoder reading y4m on stdin and writing ``output``."""
    colour = plan.output_colour.names
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-"]
    cmd += video_codec_args(preset, plan.fps, colour, threads=threads)
    # y4m carries no colour description; setparams tags the frames so every encoder writes
    # it (bare -color_* output options are overridden by the untagged input frames).
    cmd += [
        "-vf",
        colour_tag_filter(colour),
        *colour_options(colour),
        "-an",
        "-f",
        "matroska" if output.endswith(".mkv") else "mov",
        output,
    ]
    return cmd


def colour_tag_filter(colour: dict[str, str]) -> str:
    return (
        f"setparams=color_primaries={colour['primaries']}:color_trc={colour['transfer']}"
        f":colorspace={colour['matrix']}:range={colour['range']}"
    )


def colour_options(colour: dict[str, str]) -> list[str]:
    return [
        "-color_primaries",
        colour["primaries"],
        "-color_trc",
        colour["transfer"],
        "-colorspace",
        colour["matrix"],
        "-color_range",
        colour["range"],
    ]


def video_codec_args(
    preset: Preset, fps: Fraction, colour: dict[str, str], *, threads: int | None = None
) -> list[str]:
    """ffmpeg output options that encode video the way the preset says."""
    v = preset.video
    gop = gop_length(preset, fps)
    cmd: list[str] = []
    pix = FFMPEG_PIX_FMTS[v.pixel_format]
    if v.encoder == "x265":
        # libx265 through ffmpeg rather than the x265 CLI: the CLI writes a raw HEVC stream
        # without presentation timestamps, and muxing that shifts B-frames by the reorder
        # delay (measured: the first two frames fell before the edit list).
        params = [
            f"keyint={gop}",
            f"min-keyint={gop}",
            "open-gop=0",
            "log-level=error",
            f"colorprim={colour['primaries']}",
            f"transfer={colour['transfer']}",
            f"colormatrix={colour['matrix']}",
            f"range={'full' if colour['range'] == 'pc' else 'limited'}",
        ]
        if v.max_bitrate_kbps:
            params += [f"vbv-maxrate={v.max_bitrate_kbps}", f"vbv-bufsize={v.max_bitrate_kbps * 2}"]
        if threads:
            params.append(f"pools={threads}")
        cmd += [
            "-c:v",
            "libx265",
            "-preset",
            v.speed,
            "-crf",
            f"{v.crf:g}",
            "-profile:v",
            X265_PROFILES[v.pixel_format],
            "-pix_fmt",
            pix,
            "-x265-params",
            ":".join(params),
        ]
    elif v.encoder == "x264":
        cmd += [
            "-c:v",
            "libx264",
            "-preset",
            v.speed,
            "-crf",
            f"{v.crf:g}",
            "-profile:v",
            X264_PROFILES[v.pixel_format],
            "-pix_fmt",
            pix,
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-flags",
            "+cgop",
            "-bf",
            "2",
        ]
        if v.max_bitrate_kbps:
            cmd += ["-maxrate", f"{v.max_bitrate_kbps}k", "-bufsize", f"{v.max_bitrate_kbps * 2}k"]
    elif v.encoder == "prores":
        cmd += [
            "-c:v",
            "prores_ks",
            "-profile:v",
            str(PRORES_PROFILE_IDS[v.prores_profile]),
            "-vendor",
            "apl0",
            "-pix_fmt",
            pix,
        ]
    elif v.encoder == "dnxhr":
        cmd += ["-c:v", "dnxhd", "-profile:v", v.dnxhr_profile, "-pix_fmt", pix]
    elif v.encoder == "ffv1":
        cmd += ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-pix_fmt", pix]
    else:  # pragma: no cover - the preset validator only lets known encoders through
        raise ValueError(f"unknown encoder {v.encoder!r}")
    if threads and v.encoder != "x265":
        cmd += ["-threads", str(threads)]
    return cmd


@dataclass(frozen=True, slots=True)
class Loudness:
    """A first-pass loudnorm measurement (EBU R128)."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    target_offset: float


def audio_sync_filters(media: MediaInfo, duration: float) -> list[str]:
    """Filters that align the first audio stream to the first video frame and make it exactly
    as long as the video."""
    a = media.audio[0]
    offset = a.start_time - media.start_time
    out: list[str] = []
    if offset > 0.0005:
        out.append(f"adelay=delays={round(offset * 1000)}:all=1")
    elif offset < -0.0005:
        out += [f"atrim=start={-offset:.6f}", "asetpts=PTS-STARTPTS"]
    out += [f"apad=whole_dur={duration:.6f}", f"atrim=end={duration:.6f}"]
    return out


def loudnorm_filter(preset: Preset, measured: Loudness | None) -> str:
    a = preset.audio
    base = f"loudnorm=I={a.loudness_lufs:g}:TP={a.true_peak_db:g}:LRA=11"
    if measured is None:
        return base + ":print_format=json"
    values = (measured.input_i, measured.input_tp, measured.input_lra, measured.input_thresh)
    if not all(math.isfinite(v) for v in (*values, measured.target_offset)) or (
        measured.input_i <= -70
    ):
        # silence, or audio shorter than the meter's 0.4 s window: nothing to normalise
        return "anull"
    return (
        f"{base}:measured_I={measured.input_i:.2f}:measured_TP={measured.input_tp:.2f}"
        f":measured_LRA={measured.input_lra:.2f}:measured_thresh={measured.input_thresh:.2f}"
        f":offset={measured.target_offset:.2f}:linear=true:print_format=summary"
    )


def loudness_measure_command(
    preset: Preset, media: MediaInfo, *, src: str, duration: float, ffmpeg: str = "ffmpeg"
) -> list[str]:
    """First loudnorm pass: measure the source audio (after sync) and print JSON on stderr."""
    filters = [*audio_sync_filters(media, duration), loudnorm_filter(preset, None)]
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "info",
        "-i",
        media_arg(src),
        "-map",
        "0:a:0",
        "-af",
        ",".join(filters),
        "-f",
        "null",
        "-",
    ]


def audio_command(
    preset: Preset,
    media: MediaInfo,
    plan: ScriptPlan,
    *,
    src: str,
    output: str,
    loudness: Loudness | None = None,
    ffmpeg: str = "ffmpeg",
) -> list[str] | None:
    """The delivered audio alone, in a QuickTime file the mux then copies: the source's first
    audio stream aligned to the picture, exactly as long, loudness-normalised and encoded (or
    silence where the preset asks for it). None when the output has no audio. It needs no
    picture, so it runs while the video encodes. Copied from this file, the packets and the
    decoded samples equal a direct encode into the output (AAC priming included), in every
    container, when edit lists are set as the output's."""
    a = preset.audio
    duration = plan.frame_count / float(plan.fps)
    if a.codec == "none":
        return None
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if media.has_audio:
        cmd += ["-i", media_arg(src)]
        filters = audio_sync_filters(media, duration)
        if a.loudness_lufs is not None:
            filters.append(loudnorm_filter(preset, loudness))
    elif a.missing == "silence":
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r={a.sample_rate}:cl={channel_layout(a.channels)}"]
        filters = [f"atrim=end={duration:.6f}"]
    else:
        return None
    filters += audio_tail_filters(preset)
    cmd += ["-map", "0:a:0", "-af", ",".join(filters), *audio_codec_args(preset)]
    if _no_edit_lists(preset):
        cmd += ["-use_editlist", "0"]
    return [*cmd, "-map_metadata", "-1", "-f", "mov", output]


def mux_command(
    preset: Preset, *, video: str, audio: str | None, output: str, ffmpeg: str = "ffmpeg"
) -> list[str]:
    """The encoded video and the prepared audio (:func:`audio_command`) into the delivered
    container, both copied."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += ["-i", media_arg(video)]
    if audio is not None:
        cmd += ["-i", media_arg(audio)]
    cmd += ["-map", "0:v:0", "-c:v", "copy", *video_tag_args(preset)]
    if audio is not None:
        cmd += ["-map", "1:a:0", "-c:a", "copy"]
    cmd += [*container_args(preset), output]
    return cmd


def channel_layout(channels: int) -> str:
    return "stereo" if channels == 2 else "mono" if channels == 1 else f"{channels}c"


def _no_edit_lists(preset: Preset) -> bool:
    return not preset.qc.edit_lists and preset.preset.container in ("mp4", "mov")


def video_tag_args(preset: Preset) -> list[str]:
    """HEVC in MP4/MOV tagged hvc1 (what Apple players and the platforms expect)."""
    if preset.video.encoder == "x265" and preset.preset.container in ("mp4", "mov"):
        return ["-tag:v", "hvc1"]
    return []


def audio_tail_filters(preset: Preset) -> list[str]:
    """The last audio filters before the encoder: the preset's rate, and without edit lists
    the AAC priming compensation."""
    out = [f"aresample={preset.audio.sample_rate}"]
    if _no_edit_lists(preset) and preset.audio.codec == "aac":
        # Without an edit list nothing hides the AAC encoder's 1024 priming samples, so they
        # play first: drop the same length from the start to keep the audio in sync.
        out += [f"atrim=start_sample={AAC_PRIMING}", "asetpts=PTS-STARTPTS"]
    return out


def audio_codec_args(preset: Preset) -> list[str]:
    a = preset.audio
    out = ["-ac", str(a.channels), "-ar", str(a.sample_rate), "-c:a", a.codec]
    if a.codec == "aac":
        out += ["-b:a", f"{a.bitrate_kbps}k"]
    return out


def container_args(preset: Preset) -> list[str]:
    """Muxer options: moov first, colour atoms, and (when the preset's QC forbids them) no edit
    lists, B-frame reordering written as negative composition offsets instead."""
    out: list[str] = []
    if preset.preset.container in ("mp4", "mov"):
        flags = "+faststart+write_colr"
        if _no_edit_lists(preset):
            flags += "+negative_cts_offsets"
            out += ["-use_editlist", "0"]
        out += ["-movflags", flags]
    return [*out, "-map_metadata", "-1", "-f", MUXERS[preset.preset.container]]


def still_tile(height: int) -> tuple[int, int]:
    """(width, height) of each tile of a ``height``-high still: even, 16:9."""
    th = max(2, height // 4 * 2)
    return max(2, round(th * 16 / 9) // 2 * 2), th


def still_command(
    *,
    src: str,
    output: str,
    png: str,
    at_seconds: float,
    height: int = 540,
    ffmpeg: str = "ffmpeg",
    focus: tuple[float, float] = (0.5, 0.5),
) -> list[str]:
    """A before/after still of the source and output frames at the same time, ``height`` high:

    - top: the whole source frame | the whole output frame, each fitted (aspect kept, bicubic,
      square pixels) into a tile of ``height / 2`` by 16:9;
    - bottom: a tile-sized 1:1 crop of the output frame centred at ``focus`` (fractions of its
      width and height; the centre by default, kept inside the frame), every output pixel
      shown so the detail gained is visible, beside the same region of the source scaled up
      to the output's size with lanczos.

    Tiles are padded to one size (black), so any input gives a ``2 * tile`` by ``height`` PNG.
    """
    t = f"{max(0.0, at_seconds):.3f}"
    tw, th = still_tile(height)
    pad = f"pad={tw}:{th}:(ow-iw)/2:(oh-ih)/2,format=rgb24"
    fit = f"scale={tw}:{th}:force_original_aspect_ratio=decrease:flags=bicubic,setsar=1,{pad}"
    fx, fy = (min(1.0, max(0.0, float(v))) for v in focus)
    crop = (
        f"crop='min({tw},iw)':'min({th},ih)':'max(0,min(iw-ow,{fx:.4f}*iw-ow/2))'"
        f":'max(0,min(ih-oh,{fy:.4f}*ih-oh/2))',setsar=1,{pad}"
    )
    graph = ";".join(
        (
            "[0:v:0]setsar=1,split=2[src_whole][src_detail]",
            "[1:v:0]setsar=1,split=2[out_whole][out_detail]",
            f"[src_whole]{fit}[a]",
            f"[out_whole]{fit}[b]",
            "[src_detail][out_detail]scale2ref=flags=lanczos[src_up][out_ref]",
            f"[src_up]{crop}[c]",
            f"[out_ref]{crop}[d]",
            "[a][b]hstack=inputs=2[top]",
            "[c][d]hstack=inputs=2[bottom]",
            "[top][bottom]vstack=inputs=2[v]",
        )
    )
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        t,
        "-i",
        media_arg(src),
        "-ss",
        t,
        "-i",
        media_arg(output),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-frames:v",
        "1",
        "-c:v",
        "png",
        "-f",
        "image2",
        "-update",
        "1",
        png,
    ]


@dataclass(frozen=True, slots=True)
class Span:
    """One finished clip in a sequence: its file, video length in frames and audio presence."""

    path: str
    frames: int
    has_audio: bool


def sequence_frames(spans: list[Span], crossfade: int) -> int:
    return sum(s.frames for s in spans) - crossfade * (len(spans) - 1)


def sequence_filters(
    preset: Preset,
    spans: list[Span],
    *,
    fps: Fraction,
    width: int,
    height: int,
    crossfade: int,
    loudness: Loudness | None,
    measure: bool = False,
) -> str:
    """The filter graph joining ``spans`` (inputs 0..n-1) at one cadence and size, with
    ``crossfade``-frame video and audio crossfades; outputs ``[vout]`` and ``[aout]`` (only
    ``[aout]``, ending in a loudness measurement, when ``measure``)."""
    a = preset.audio
    rate = f"{fps.numerator}/{fps.denominator}"
    layout = channel_layout(a.channels)
    d = crossfade / fps
    parts: list[str] = []
    for i, s in enumerate(spans):
        seconds = f"{s.frames / fps:.6f}"
        if not measure:
            parts.append(
                f"[{i}:v:0]fps={rate},scale={width}:{height}:flags=spline,setsar=1,"
                f"format={FFMPEG_PIX_FMTS[preset.video.pixel_format]},settb=AVTB[v{i}]"
            )
        if a.codec != "none":
            head = f"[{i}:a:0]" if s.has_audio else f"anullsrc=r={a.sample_rate}:cl={layout},"
            parts.append(
                f"{head}aresample={a.sample_rate},aformat=sample_fmts=fltp:channel_layouts={layout},"
                f"apad=whole_dur={seconds},atrim=end={seconds},asetpts=PTS-STARTPTS[a{i}]"
            )
    audio = a.codec != "none"
    if crossfade and len(spans) > 1:
        v, au, done = "v0", "a0", 0
        for k in range(1, len(spans)):
            done += spans[k - 1].frames
            offset = (done - k * crossfade) / fps
            if not measure:
                parts.append(
                    f"[{v}][v{k}]xfade=transition=fade:duration={float(d):.6f}:"
                    f"offset={float(offset):.6f}[x{k}]"
                )
                v = f"x{k}"
            if audio:
                parts.append(f"[{au}][a{k}]acrossfade=d={float(d):.6f}:c1=tri:c2=tri[y{k}]")
                au = f"y{k}"
    else:
        n = len(spans)
        if measure:
            v = ""
            parts.append("".join(f"[a{i}]" for i in range(n)) + f"concat=n={n}:v=0:a=1[ycat]")
            au = "ycat"
        elif audio:
            parts.append(
                "".join(f"[v{i}][a{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=1[xcat][ycat]"
            )
            v, au = "xcat", "ycat"
        else:
            parts.append("".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[xcat]")
            v, au = "xcat", ""
    if not measure:
        colour = output_colour(preset).names
        parts.append(f"[{v}]{colour_tag_filter(colour)}[vout]")
    if audio:
        tail = []
        if a.loudness_lufs is not None:
            tail.append(loudnorm_filter(preset, None if measure else loudness))
        tail += [] if measure else audio_tail_filters(preset)
        parts.append(f"[{au}]{','.join(tail) or 'anull'}[aout]")
    return ";".join(parts)


def sequence_command(
    preset: Preset,
    spans: list[Span],
    *,
    fps: Fraction,
    width: int,
    height: int,
    crossfade: int,
    output: str,
    loudness: Loudness | None = None,
    measure: bool = False,
    ffmpeg: str = "ffmpeg",
    threads: int | None = None,
) -> list[str]:
    """One ffmpeg run that joins finished clips into the preset's deliverable (or, with
    ``measure``, the first loudness pass over the joined audio)."""
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "info" if measure else "error", "-y"]
    for s in spans:
        cmd += ["-i", media_arg(s.path)]
    graph = sequence_filters(
        preset,
        spans,
        fps=fps,
        width=width,
        height=height,
        crossfade=crossfade,
        loudness=loudness,
        measure=measure,
    )
    cmd += ["-filter_complex", graph]
    if measure:
        return [*cmd, "-map", "[aout]", "-f", "null", "-"]
    colour = output_colour(preset).names
    cmd += [
        "-map",
        "[vout]",
        *video_codec_args(preset, fps, colour, threads=threads),
        *colour_options(colour),
        *video_tag_args(preset),
    ]
    if preset.audio.codec != "none":
        cmd += ["-map", "[aout]", *audio_codec_args(preset)]
    return [*cmd, *container_args(preset), output]


def parse_loudnorm_json(stderr: str) -> Loudness:
    start = stderr.rfind("{")
    end = stderr.rfind("}")
    if start < 0 or end < start:
        raise AppError("loudness measurement printed no result; is the audio stream decodable?")
    data = json.loads(stderr[start : end + 1])

    def num(key: str) -> float:
        value = float(data[key])
        return value if value > -99 else -99.0  # silence measures -inf

    return Loudness(
        num("input_i"),
        num("input_tp"),
        num("input_lra"),
        num("input_thresh"),
        num("target_offset"),
    )
