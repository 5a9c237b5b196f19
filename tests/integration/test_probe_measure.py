"""The probe: its reuse of an unchanged clip, one read for two threads asking at once, and
``on_header`` (where the assessment starts indexing); and the output measurement (real
ffprobe and ffmpeg on tiny lavfi clips)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.analysis.assessment import keyframe_numbers
from daemon.core import probe as probe_module
from daemon.core.errors import AppError
from daemon.core.probe import probe
from daemon.engine.measure import measure
from tests.conftest import ffmpeg, make_clip
from vs_scripts.plan.media import MediaInfo, ProbeError


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The real ``_probe``, recording each file it reads."""
    real, reads = probe_module._probe, []

    def counted(p: Path, exact: bool, on_header: object) -> MediaInfo:
        reads.append(p)
        return real(p, exact, on_header)  # type: ignore[arg-type]

    monkeypatch.setattr(probe_module, "_probe", counted)
    return reads


def test_an_unchanged_clip_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path / "a.mp4", seconds=1.0)
    reads = _counting(monkeypatch)
    first = probe(clip)
    assert first.frame_count == 12 and first.has_audio
    assert probe(clip) == first
    # the same file by another name: the path it was asked by, the rest as read
    monkeypatch.chdir(tmp_path)
    again = probe(Path("a.mp4"))
    assert again.path == "a.mp4" and again.frame_count == first.frame_count
    assert reads == [clip]


def test_a_clip_replaced_under_its_name_is_probed_again(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "b.mp4", seconds=1.0)
    assert probe(clip).frame_count == 12
    make_clip(clip, seconds=2.0, fps="24", audio=False)  # ffmpeg rewrites it in place
    again = probe(clip)
    assert again.frame_count == 48 and not again.has_audio
    assert probe(clip, exact=False).frame_count == 48  # not the exact probe's entry either


def test_a_clip_changed_with_its_size_and_time_kept_is_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rewritten with the same length and modification time (as `cp -p` or `touch -r` can
    # leave it): its change time differs, so it is read again
    clip = make_clip(tmp_path / "c.mp4", seconds=1.0, audio=False)
    probe(clip)
    st = clip.stat()
    data = bytearray(clip.read_bytes())
    start = data.index(b"mdat") + 8
    data[start : start + 16] = bytes(16)  # a damaged first frame, the container intact
    clip.write_bytes(bytes(data))
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (clip.stat().st_size, clip.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    reads = _counting(monkeypatch)
    probe(clip)
    assert reads == [clip]


def test_a_refused_clip_is_not_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "d.mp4"
    bad.write_bytes(b"not a clip at all" * 100)
    reads = _counting(monkeypatch)
    for _ in range(2):  # refused each time, read each time
        with pytest.raises(ProbeError, match=r"d\.mp4"):
            probe(bad)
    assert reads == [bad, bad]


def test_two_threads_probing_one_clip_read_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "e.mp4", seconds=1.0)
    reads = _counting(monkeypatch)
    results: list[MediaInfo] = []
    go = threading.Barrier(3)

    def one() -> None:
        go.wait()
        results.append(probe(clip))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert reads == [clip]


def test_a_probe_waiting_for_another_hears_of_the_header_before_the_packets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the assessment waits for the audio's probe of the same clip and still starts its
    # index when the streams pass, not after the packets
    clip = make_clip(tmp_path / "e2.mp4", seconds=1.0)
    real, passed, release = probe_module._probe, threading.Event(), threading.Event()

    def held(p: Path, exact: bool, on_header: Callable[[], None]) -> MediaInfo:
        def then_hold() -> None:
            on_header()
            passed.set()
            assert release.wait(60)

        return real(p, exact, then_hold)

    monkeypatch.setattr(probe_module, "_probe", held)
    first = threading.Thread(target=probe, args=(clip,))
    first.start()
    try:
        assert passed.wait(60)  # the first reader's streams passed; its packets are held
        seen: list[object] = []
        waiter = threading.Thread(
            target=lambda: seen.append(probe(clip, on_header=lambda: seen.append("header")))
        )
        waiter.start()
        for _ in range(600):  # called while the first reader is still held
            if seen:
                break
            time.sleep(0.05)
        assert seen == ["header"]
    finally:
        release.set()
        first.join(60)
    waiter.join(60)
    assert seen[0] == "header" and isinstance(seen[1], MediaInfo)


def test_on_header_is_called_for_a_clip_before_its_packets_are_read(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "f.mp4", seconds=1.0)
    calls: list[str] = []
    media = probe(clip, on_header=lambda: calls.append("header"))
    assert calls == ["header"] and media.frame_count == 12
    probe(clip, on_header=lambda: calls.append("again"))  # known: nothing is read
    assert calls == ["header"]


def test_on_header_is_not_called_for_a_clip_its_streams_refuse(tmp_path: Path) -> None:
    # interlaced: refused from the stream header, so the assessment never decodes it
    clip = tmp_path / "g.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=0.4", "-vf", "setfield=tff",
        "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme", "-x264-params",
        "tff=1", "-pix_fmt", "yuv420p", "file:" + str(clip),
    )  # fmt: skip
    calls: list[str] = []
    with pytest.raises(ProbeError, match="interlaced"):
        probe(clip, on_header=lambda: calls.append("header"))
    assert calls == []


def test_the_probe_reads_the_keyframes_ffprobe_flags(tmp_path: Path) -> None:
    # a keyframe each second: the probe's packet pass finds them, and the chunk planner and
    # the assessment's split pass read them from the probe, not from the packets again
    clip = make_clip(tmp_path / "k.mp4", seconds=3.0, extra=("-g", "12", "-sc_threshold", "0"))
    media = probe(clip)
    assert media.keyframes == (0.0, 1.0, 2.0)
    flagged = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", str(clip)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    # what ffprobe flags as keyframes, read on its own
    keys = sorted(float(t) for t, _, f in (line.partition(",") for line in flagged) if f[:1] == "K")
    assert list(media.keyframes) == keys
    assert keyframe_numbers(media) == [0, 12, 24]
    assert probe(clip, exact=False).keyframes is None  # no packets read, none known
    # a VFR clip's keyframe times do not give frame numbers closely: no hint
    assert keyframe_numbers(dataclasses.replace(media, vfr=True)) == []


def test_measure_meters_loudness(tmp_path: Path) -> None:
    with_audio = measure(make_clip(tmp_path / "h.mp4", seconds=2.0))
    assert with_audio.frames == 24 and with_audio.audio_streams == 1
    assert with_audio.loudness_lufs is not None and -40.0 < with_audio.loudness_lufs < 0.0
    assert with_audio.true_peak_db is not None and with_audio.true_peak_db <= 0.5
    unmetered = measure(tmp_path / "h.mp4", with_loudness=False)
    assert unmetered.loudness_lufs is None and unmetered.frames == 24


def test_measure_of_a_clip_without_audio_has_no_loudness(tmp_path: Path) -> None:
    facts = measure(make_clip(tmp_path / "i.mp4", seconds=1.0, audio=False))
    assert facts.audio_streams == 0 and facts.frames == 12
    assert facts.loudness_lufs is None and facts.true_peak_db is None


def test_measure_of_a_damaged_file_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "j.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(AppError, match="ffprobe cannot read it"):
        measure(bad)
