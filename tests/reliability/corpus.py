"""The bad-input corpus: small odd or broken files, each with what finishline must do with it.

Every file is made here, from ffmpeg's lavfi sources and Python bytes (nothing is committed):
``python -m tests.reliability.corpus OUT_DIR`` writes them all and prints the table. Each
case is "ok" (odd but valid media that must be delivered) or "error" (a one-line error whose
text matches ``pattern``: what the file is and what to do).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

OK = "ok"
ERROR = "error"

SIZE = "160x90"
"""The frame size of the ordinary clips; everything stays far below 200 KB."""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    """The file name (its extension is part of the case)."""
    description: str
    expect: str
    """``OK`` (delivered) or ``ERROR`` (refused with a clear one-line error)."""
    make: Callable[[Path, Builder], None]
    pattern: str = ""
    """For ``ERROR``: a regular expression the error line must match (``re.search``)."""
    slow: bool = False
    """Left out of the default test run (``-m slow``): a variant of a faster case."""
    known: str = ""
    """A failure known and not yet fixed: where the fix belongs (the test expects it to fail)."""


class Builder:
    """Makes the files; the base clips that several cases cut or rename are made once."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path] = {}

    def ffmpeg(self, *args: str) -> None:
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-v", "error", "-nostdin", "-y", *args],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def clip(
        self,
        out: Path,
        *,
        size: str = SIZE,
        fps: str = "12",
        seconds: float = 0.5,
        audio: str | None = "sine=frequency=440:sample_rate=44100",
        audio_seconds: float | None = None,
        vcodec: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast"),
        pix_fmt: str = "yuv420p",
        acodec: tuple[str, ...] = ("-c:a", "aac", "-b:a", "64k", "-ac", "2"),
        vf: str = "",
        extra: tuple[str, ...] = (),
    ) -> Path:
        """A testsrc2 clip with an optional lavfi audio source, written to ``out``."""
        args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
        if audio:
            secs = seconds if audio_seconds is None else audio_seconds
            args += ["-f", "lavfi", "-i", f"{audio}:duration={secs}", *acodec]
        else:
            args += ["-an"]
        if vf:
            args += ["-vf", vf]
        args += [*vcodec, "-pix_fmt", pix_fmt, *extra, "file:" + str(out)]
        self.ffmpeg(*args)
        return out

    def base(self, key: str) -> Path:
        """A shared clip: ``mp4`` (moov at the end), ``faststart`` (moov first), ``mkv``,
        ``png``, ``jpeg``."""
        if key in self._made:
            return self._made[key]
        path = self.scratch / f"base-{key}"
        if key == "mp4":
            self.clip(path.with_suffix(".mp4"), seconds=1.0)
        elif key == "faststart":
            self.clip(path.with_suffix(".mp4"), seconds=1.0, extra=("-movflags", "+faststart"))
        elif key == "mkv":
            self.clip(path.with_suffix(".mkv"), seconds=1.0)
        elif key in ("png", "jpeg", "gif", "bmp", "webp", "tiff"):
            codec = {"jpeg": "mjpeg", "webp": "libwebp"}.get(key, key)
            pix = {"jpeg": "yuvj420p", "gif": "rgb8", "bmp": "bgr24", "webp": "yuv420p"}
            self.ffmpeg(
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={SIZE}:rate=1",
                "-frames:v",
                "1",
                "-c:v",
                codec,
                "-pix_fmt",
                pix.get(key, "rgb24"),
                "-f",
                "image2",
                "-update",
                "1",
                "file:" + str(path.with_suffix("." + key)),
            )
        else:
            raise KeyError(key)
        self._made[key] = path.with_suffix({"faststart": ".mp4"}.get(key, "." + key))
        return self._made[key]


# -- helpers for the byte-level cases ----------------------------------------------------------


def mp4_boxes(data: bytes) -> Iterator[tuple[str, int, int]]:
    """Top-level ISO-BMFF boxes: (type, offset, size)."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        yield kind.decode("latin-1"), pos, size
        if size < 8:
            return
        pos += size


def _box(data: bytes, kind: str) -> tuple[int, int]:
    for k, off, size in mp4_boxes(data):
        if k == kind:
            return off, size
    raise ValueError(f"no {kind} box")


def _copy(key: str) -> Callable[[Path, Builder], None]:
    def make(out: Path, b: Builder) -> None:
        shutil.copyfile(b.base(key), out)

    return make


def _bytes(data: bytes) -> Callable[[Path, Builder], None]:
    def make(out: Path, b: Builder) -> None:
        out.write_bytes(data)

    return make


def _random(out: Path, b: Builder) -> None:
    out.write_bytes(random.Random(13).randbytes(64 * 1024))


def _html(out: Path, b: Builder) -> None:
    out.write_text(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
        "<body><h1>Forbidden</h1><p>The link to this video has expired.</p></body></html>\n"
    )


def _pdf(out: Path, b: Builder) -> None:
    out.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")


def _zip(out: Path, b: Builder) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.write(b.base("mp4"), "clip.mp4")


def _cut_before_moov(out: Path, b: Builder) -> None:
    data = b.base("mp4").read_bytes()
    off, _ = _box(data, "moov")
    out.write_bytes(data[:off])


def _cut_mid_mdat(out: Path, b: Builder) -> None:
    data = b.base("faststart").read_bytes()
    out.write_bytes(data[: len(data) * 2 // 3])


def _cut_half(out: Path, b: Builder) -> None:
    data = b.base("mp4").read_bytes()
    out.write_bytes(data[: len(data) // 2])


def _mkv_cut(out: Path, b: Builder) -> None:
    data = b.base("mkv").read_bytes()
    out.write_bytes(data[: len(data) // 2])


def _mkv_header_only(out: Path, b: Builder) -> None:
    out.write_bytes(b.base("mkv").read_bytes()[:400])


def _moov_garbage(out: Path, b: Builder) -> None:
    data = bytearray(b.base("faststart").read_bytes())
    off, size = _box(bytes(data), "moov")
    junk = random.Random(7).randbytes(min(size - 8, 600))
    data[off + 8 : off + 8 + len(junk)] = junk
    out.write_bytes(bytes(data))


def _ftyp_garbage(out: Path, b: Builder) -> None:
    data = bytearray(b.base("faststart").read_bytes())
    data[0:32] = random.Random(3).randbytes(32)
    out.write_bytes(bytes(data))


def _mdat_zeroed(out: Path, b: Builder) -> None:
    """Header intact (frame count, size, codec) but every frame's bytes are zeros."""
    data = bytearray(b.base("faststart").read_bytes())
    off, size = _box(bytes(data), "mdat")
    data[off + 8 : off + size] = bytes(size - 8)
    out.write_bytes(bytes(data))


def _y4m_header(width: int, height: int) -> Callable[[Path, Builder], None]:
    def make(out: Path, b: Builder) -> None:
        head = f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
        out.write_bytes(head + bytes(4096))

    return make


def _y4m(out: Path, b: Builder) -> None:
    b.ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=12:duration=0.5",
        "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "file:" + str(out),
    )  # fmt: skip


def _image(key: str) -> Callable[[Path, Builder], None]:
    return _copy(key)


def _animated_gif(out: Path, b: Builder) -> None:
    b.ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=10:duration=0.6",
        "-c:v", "gif", "-f", "gif", "file:" + str(out),
    )  # fmt: skip


def _clip(**kw: object) -> Callable[[Path, Builder], None]:
    def make(out: Path, b: Builder) -> None:
        b.clip(out, **kw)  # type: ignore[arg-type]

    return make


def _vfr(out: Path, b: Builder) -> None:
    """24 fps for 6 frames, then every other frame dropped (12 fps), with audio."""
    b.clip(
        out, fps="24", seconds=1.0, vf=r"select=lt(n\,6)+not(mod(n\,2))", extra=("-fps_mode", "vfr")
    )


def _vfr_real(out: Path, b: Builder) -> None:
    """6 frames at 12 fps, then 12 at 24 fps: frame durations differ, timestamps are exact."""
    b.clip(
        out,
        fps="24",
        seconds=1.0,
        audio=None,
        vf=r"select=lt(n\,12)*not(mod(n\,2))+gte(n\,12)",
        extra=("-fps_mode", "vfr"),
    )


def _rotated(out: Path, b: Builder) -> None:
    tmp = b.scratch / "rot-src.mp4"
    b.clip(tmp)
    b.ffmpeg(
        "-i", "file:" + str(tmp), "-c", "copy", "-metadata:s:v:0", "rotate=90",
        "file:" + str(out),
    )  # fmt: skip


def _with_subtitles(out: Path, b: Builder) -> None:
    srt = b.scratch / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,400\nhello\n")
    b.ffmpeg(
        "-i", "file:" + str(b.base("mkv")), "-i", "file:" + str(srt),
        "-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt", "file:" + str(out),
    )  # fmt: skip


def _subtitle_only(out: Path, b: Builder) -> None:
    srt = b.scratch / "subs-only.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nonly words here\n")
    b.ffmpeg("-i", "file:" + str(srt), "-c:s", "srt", "file:" + str(out))


def _srt_text(out: Path, b: Builder) -> None:
    out.write_text("1\n00:00:00,000 --> 00:00:02,000\nsubtitles, not a video\n")


def _audio_only(fmt: str, codec: tuple[str, ...]) -> Callable[[Path, Builder], None]:
    def make(out: Path, b: Builder) -> None:
        b.ffmpeg(
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
            *codec, "-f", fmt, "file:" + str(out),
        )  # fmt: skip

    return make


def _music_with_cover(out: Path, b: Builder) -> None:
    b.ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
        "-i", "file:" + str(b.base("png")),
        "-map", "0", "-map", "1", "-c:a", "aac", "-b:a", "64k", "-c:v", "png",
        "-disposition:v:0", "attached_pic", "-f", "mp4", "file:" + str(out),
    )  # fmt: skip


def _video_with_cover(out: Path, b: Builder) -> None:
    b.ffmpeg(
        "-i", "file:" + str(b.base("mp4")), "-i", "file:" + str(b.base("png")),
        "-map", "0", "-map", "1", "-c", "copy", "-c:v:1", "png",
        "-disposition:v:1", "attached_pic", "file:" + str(out),
    )  # fmt: skip


def _two_video(out: Path, b: Builder) -> None:
    other = b.clip(b.scratch / "second.mkv", size="96x54", audio=None, seconds=1.0)
    b.ffmpeg(
        "-i", "file:" + str(b.base("mkv")), "-i", "file:" + str(other),
        "-map", "0:v", "-map", "1:v", "-map", "0:a", "-c", "copy", "file:" + str(out),
    )  # fmt: skip


def _zero_frames(out: Path, b: Builder) -> None:
    """An MP4 whose video track exists but holds no frames (a recording stopped at once)."""
    b.ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate=12:duration=1",
        "-f", "lavfi", "-i", "sine=duration=1",
        "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-frames:v", "0", "file:" + str(out),
    )  # fmt: skip


def _folder(out: Path, b: Builder) -> None:
    out.mkdir()
    (out / "inside.txt").write_text("a folder, not a clip\n")


def _interlaced_mpeg2(out: Path, b: Builder) -> None:
    b.clip(
        out,
        size="720x90",
        fps="25",
        seconds=0.2,
        vf="setfield=tff",
        vcodec=("-c:v", "mpeg2video", "-q:v", "10", "-flags", "+ilme+ildct", "-top", "1"),
        acodec=("-c:a", "mp2", "-b:a", "64k"),
        audio="sine=frequency=440:sample_rate=48000",
        extra=("-f", "mpeg"),
    )


def _interlaced_h264(out: Path, b: Builder) -> None:
    b.clip(
        out,
        size="720x480",
        fps="30000/1001",
        seconds=0.2,
        vf="setfield=bff",
        vcodec=(
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "40",
            "-flags", "+ildct+ilme", "-x264-params", "bff=1",
        ),
    )  # fmt: skip


CODEC_H264_444_10 = ("-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high444")

_CASES: tuple[Case, ...] = (
    # ---- odd but valid: must be delivered ---------------------------------------------------
    Case("baseline.mp4", "control: 160x90 12 fps H.264 + AAC", OK, _clip()),
    Case("odd-size-161x91.mkv", "odd frame size 161x91 (FFV1 4:2:0)", OK,
         _clip(size="161x91", vcodec=("-c:v", "ffv1"))),
    Case("odd-size-4x4.mp4", "a 4x4 pixel clip", OK, _clip(size="4x4", audio=None)),
    Case("vfr.mp4", "variable frame rate: 12 fps then 24 fps", OK, _vfr_real),
    Case("vfr-dropped.mp4", "24 fps, then every other frame dropped (VFR), audio", OK, _vfr),
    Case("rotated-90.mp4", "display matrix says rotate 90 degrees", OK, _rotated),
    Case("yuvj420p.mp4", "full-range 'JPEG' YUV (yuvj420p), as phones write", OK,
         _clip(pix_fmt="yuvj420p")),
    Case("yuv444p10.mp4", "H.264 High 4:4:4 10-bit", OK,
         _clip(pix_fmt="yuv444p10le", vcodec=CODEC_H264_444_10)),
    Case("fps-1.mp4", "1 fps, 3 frames", OK, _clip(fps="1", seconds=3.0)),
    Case("fps-120.mp4", "120 fps, 60 frames", OK, _clip(fps="120", seconds=0.5)),
    Case("ntsc-29.97.mp4", "29.97 fps (30000/1001)", OK, _clip(fps="30000/1001", seconds=0.4)),
    Case("prores.mov", "ProRes 422 Proxy with PCM audio", OK,
         _clip(seconds=0.5, pix_fmt="yuv422p10le",
               vcodec=("-c:v", "prores_ks", "-profile:v", "0", "-qscale:v", "31"),
               acodec=("-c:a", "pcm_s16le"))),
    Case("vp9-alpha.webm", "VP9 with an alpha channel and Opus audio", OK,
         _clip(pix_fmt="yuva420p", audio="sine=frequency=440:sample_rate=48000",
               vcodec=("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
               acodec=("-c:a", "libopus", "-b:a", "32k"))),
    Case("hevc-10bit.mp4", "HEVC Main 10", OK,
         _clip(pix_fmt="yuv420p10le",
               vcodec=("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=0"),
               extra=("-tag:v", "hvc1"))),
    Case("mpeg2.ts", "MPEG-2 video and MP2 audio in MPEG-TS", OK,
         _clip(vcodec=("-c:v", "mpeg2video", "-q:v", "8"),
               acodec=("-c:a", "mp2", "-b:a", "64k"),
               audio="sine=frequency=440:sample_rate=48000")),
    Case("ffv1.mkv", "FFV1 lossless in Matroska, FLAC audio", OK,
         _clip(vcodec=("-c:v", "ffv1"), acodec=("-c:a", "flac"))),
    Case("mjpeg.avi", "Motion JPEG (6 frames) with PCM audio in AVI", OK,
         _clip(pix_fmt="yuvj420p", vcodec=("-c:v", "mjpeg", "-q:v", "8"),
               acodec=("-c:a", "pcm_s16le"))),
    Case("png-video.mov", "PNG-coded video (screen recording style), 6 frames", OK,
         _clip(pix_fmt="rgb24", vcodec=("-c:v", "png"), audio=None)),
    Case("raw.y4m", "raw YUV4MPEG2 (no audio)", OK, _y4m),
    Case("start-offset.mkv", "timestamps start at 10 s", OK,
         _clip(extra=("-output_ts_offset", "10"))),
    Case("audio-mono.mp4", "mono audio", OK, _clip(extra=("-ac", "1"))),
    Case("audio-6ch.mp4", "5.1 (6-channel) audio", OK, _clip(extra=("-ac", "6"))),
    Case("audio-48k-opus.mkv", "Opus audio at 48 kHz", OK,
         _clip(audio="sine=frequency=440:sample_rate=48000",
               acodec=("-c:a", "libopus", "-b:a", "32k"))),
    Case("no-audio.mp4", "video only, no audio stream", OK, _clip(audio=None)),
    Case("audio-longer.mp4", "audio 1.5 s, video 0.5 s", OK, _clip(audio_seconds=1.5)),
    Case("audio-shorter.mp4", "audio 0.2 s, video 1 s", OK,
         _clip(seconds=1.0, audio_seconds=0.2)),
    Case("short-0.25s.mp4", "a 0.25 s clip: audio shorter than one loudness block (0.4 s)", OK,
         _clip(seconds=0.25)),
    Case("one-frame.mp4", "a 1-frame H.264 clip", OK, _clip(seconds=1 / 12, audio=None)),
    Case("mkv-named.mp4", "Matroska content with an .mp4 name", OK, _copy("mkv")),
    Case("mp4-named.mov", "MP4 content with a .mov name", OK, _copy("faststart")),
    Case("with-subtitles.mkv", "video, audio and a SubRip subtitle track", OK, _with_subtitles),
    Case("with-cover-art.mp4", "video plus an attached cover picture", OK, _video_with_cover),
    Case("two-video-streams.mkv", "two video streams (the first is used)", OK, _two_video),
    Case("anamorphic-sar.mp4", "non-square pixels (SAR 4:3)", OK,
         _clip(vf="setsar=4/3")),
    # ---- not video, or broken: must be refused with one clear sentence ----------------------
    Case("empty.mp4", "0 bytes", ERROR, _bytes(b""), r"empty \(0 bytes\)"),
    Case("zeros.mp4", "64 KiB of zero bytes", ERROR, _bytes(bytes(64 * 1024)),
         r"only zero bytes.*copy it again"),
    Case("random.mp4", "64 KiB of random bytes", ERROR, _random,
         r"not a video file ffprobe can read.*damaged or not a video"),
    Case("notes.mp4", "a text file named .mp4", ERROR,
         _bytes(b"this is not a video\n" * 50), r"is a text file, not a video"),
    Case("page.mp4", "an HTML error page saved as .mp4 (a failed download)", ERROR, _html,
         r"is a web page \(HTML\), not a video.*download"),
    Case("doc.mov", "a PDF named .mov", ERROR, _pdf, r"is a PDF document, not a video"),
    Case("archive.mp4", "a ZIP archive (holding a clip) named .mp4", ERROR, _zip,
         r"is a ZIP archive.*extract"),
    Case("photo.mp4", "a JPEG photo named .mp4", ERROR, _image("jpeg"),
         r"is a JPEG image, not a video clip; export it as a video"),
    Case("photo.jpg", "a JPEG photo with its own name", ERROR, _image("jpeg"),
         r"is a JPEG image, not a video clip"),
    Case("still.mov", "a PNG image named .mov", ERROR, _image("png"),
         r"is a PNG image, not a video clip"),
    Case("still-gif.mp4", "a single-frame GIF named .mp4", ERROR, _image("gif"),
         r"is a GIF image, not a video clip"),
    Case("still.mkv", "a BMP image named .mkv", ERROR, _image("bmp"),
         r"is a BMP image, not a video clip"),
    Case("still-webp.mp4", "a WebP image named .mp4", ERROR, _image("webp"),
         r"is a WebP image, not a video clip"),
    Case("still-tiff.mov", "a TIFF image named .mov", ERROR, _image("tiff"),
         r"is a TIFF image, not a video clip"),
    Case("animated.gif", "an animated GIF (6 frames)", ERROR, _animated_gif,
         r"is an animated GIF.*convert it to a video"),
    Case("animated-gif.mp4", "an animated GIF named .mp4", ERROR, _animated_gif,
         r"is an animated GIF.*convert it to a video"),
    Case("no-moov.mp4", "MP4 cut just before its index (moov at the end)", ERROR,
         _cut_before_moov, r"index \(moov\) is missing.*copy it again"),
    Case("truncated-half.mp4", "the first half of an MP4 whose moov is at the end", ERROR,
         _cut_half, r"index \(moov\) is missing.*copy it again"),
    Case("cut-mdat.mp4", "faststart MP4 cut mid-mdat (frames missing)", ERROR, _cut_mid_mdat,
         r"truncated.*copy"),
    Case("cut.mkv", "the first half of a Matroska file", ERROR, _mkv_cut,
         r"truncated.*copy"),
    Case("header-only.mkv", "the first 400 bytes of a Matroska file", ERROR, _mkv_header_only,
         r"damaged or incomplete Matroska/WebM file"),
    Case("moov-garbage.mp4", "faststart MP4 whose moov box is overwritten with random bytes",
         ERROR, _moov_garbage, r"no video stream.*damaged"),
    Case("ftyp-garbage.mp4", "MP4 whose first 32 bytes are random", ERROR, _ftyp_garbage,
         r"damaged or incomplete MP4/MOV file"),
    Case("undecodable.mp4", "header intact, every frame's bytes zeroed", ERROR, _mdat_zeroed,
         r"cannot be decoded.*damaged"),
    Case("zero-frames.mp4", "a recording stopped at once: no frames, no streams", ERROR,
         _zero_frames, r"no video stream.*empty or damaged"),
    Case("huge.y4m", "Y4M header claiming a 40000x40000 frame", ERROR, _y4m_header(40000, 40000),
         r"40000x40000.*damaged"),
    Case("wide.y4m", "Y4M header claiming a 20000x10000 frame, 4 KiB of data", ERROR,
         _y4m_header(20000, 10000), r"20000x10000.*larger than"),
    Case("song.mp4", "AAC audio only, named .mp4", ERROR, _audio_only("mp4", ("-c:a", "aac")),
         r"is an audio file \(aac\) with no video"),
    Case("song-mp3.mp4", "MP3 audio named .mp4", ERROR,
         _audio_only("mp3", ("-c:a", "libmp3lame")), r"is an audio file \(mp3\) with no video"),
    Case("voice.mov", "WAV audio named .mov", ERROR,
         _audio_only("wav", ("-c:a", "pcm_s16le")), r"is an audio file \(pcm_s16le\)"),
    Case("music-cover.mp4", "AAC audio with cover art (a music file)", ERROR, _music_with_cover,
         r"is an audio file \(aac\) with cover art"),
    Case("subtitles.mkv", "Matroska holding only a subtitle track", ERROR, _subtitle_only,
         r"holds only subtitles"),
    Case("subtitles.mp4", "a SubRip text file named .mp4", ERROR, _srt_text,
         r"holds only subtitles|is a text file"),
    Case("interlaced-tff-720x90.mpg", "MPEG-2 interlaced, top field first, 720x90", ERROR,
         _interlaced_mpeg2, r"interlaced.*bwdif"),
    Case("interlaced-bff-720x480.mp4", "H.264 interlaced, bottom field first, 720x480", ERROR,
         _interlaced_h264, r"interlaced.*bwdif"),
    Case("folder.mp4", "a folder with a video name", ERROR, _folder, r"is a folder"),
)  # fmt: skip


SLOW = frozenset(
    {
        "vfr-dropped.mp4",
        "yuvj420p.mp4",
        "yuv444p10.mp4",
        "ntsc-29.97.mp4",
        "hevc-10bit.mp4",
        "mpeg2.ts",
        "ffv1.mkv",
        "start-offset.mkv",
        "audio-mono.mp4",
        "audio-6ch.mp4",
        "audio-48k-opus.mkv",
        "audio-longer.mp4",
        "mkv-named.mp4",
        "mp4-named.mov",
        "with-subtitles.mkv",
        "with-cover-art.mp4",
        "two-video-streams.mkv",
        "anamorphic-sar.mp4",
    }
)
"""Delivered cases that vary a container or stream detail the default run already covers;
each takes a full encode (about 10 s on 2 cores)."""

KNOWN: dict[str, str] = {}
"""Failures found by the corpus whose fix belongs outside the probe."""

CASES: tuple[Case, ...] = tuple(
    replace(c, slow=c.name in SLOW, known=KNOWN.get(c.name, "")) for c in _CASES
)


def by_name() -> dict[str, Case]:
    return {c.name: c for c in CASES}


def generate(out_dir: Path, cases: tuple[Case, ...] = CASES) -> dict[str, Path]:
    """Write every case's file into ``out_dir``; returns the paths by case name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = Builder(out_dir / ".scratch")
    made = {}
    for case in cases:
        path = out_dir / case.name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        case.make(path, builder)
        made[case.name] = path
    shutil.rmtree(builder.scratch, ignore_errors=True)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.reliability.corpus", description=__doc__)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    paths = generate(args.out_dir)
    rows = []
    for case in CASES:
        p = paths[case.name]
        size = p.stat().st_size if p.is_file() else 0
        rows.append(
            {
                "name": case.name,
                "expect": case.expect,
                "pattern": case.pattern,
                "bytes": size,
                "description": case.description,
                "slow": case.slow,
                "known": case.known,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            flags = ("slow " if r["slow"] else "") + ("known " if r["known"] else "")
            print(f"{r['name']:30} {r['expect']:5} {r['bytes']:>8}  {flags}{r['description']}")
        print(
            f"{len(rows)} cases in {args.out_dir} ({time.monotonic() - t0:.1f}s)", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
