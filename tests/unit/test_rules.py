"""The pure rules, one at a time: the output checks (verification + QC), daemon config
parsing, intake readiness and ignore rules, sequence planning, MP4 box parsing, derived names,
log lines and the typed artifacts."""

from __future__ import annotations

import struct
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from daemon.core import artifacts as A
from daemon.core.files import short_name
from daemon.engine.assemble import Sequence, plan_sequence
from daemon.engine.checks import Expected, Facts, evaluate
from daemon.engine.measure import _audio_duration, mp4_boxes
from daemon.runtime.config import DaemonConfig, parse_config
from daemon.runtime.intake import Pending, is_ignored
from daemon.runtime.logs import parse_line
from vs_scripts.plan.errors import AppError
from vs_scripts.plan.preset import load_preset
from vs_scripts.plan.render import Tuning

VIMEO = """
[preset]
description = "t"
container = "mp4"
[frame]
width = 1920
height = 1080
[video]
encoder = "x264"
pixel_format = "yuv420p"
gop_seconds = 1.0
[audio]
codec = "aac"
bitrate_kbps = 320
loudness_lufs = -14.0
true_peak_db = -1.0
[qc]
enabled = true
max_video_kbps = 20000
faststart = true
edit_lists = false
"""


@pytest.fixture
def preset():
    return load_preset(VIMEO, source="t.toml", name="t")


def good_facts(**changes: object) -> Facts:
    facts = Facts(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        video_streams=1,
        audio_streams=1,
        top_level_boxes=["ftyp", "moov", "mdat"],
        edit_lists=0,
        duration=2.0,
        video_codec="h264",
        video_profile="High",
        width=1920,
        height=1080,
        sar="1:1",
        fps="24/1",
        frames=48,
        pix_fmt="yuv420p",
        colour={"matrix": "bt709", "transfer": "bt709", "primaries": "bt709", "range": "tv"},
        max_keyframe_interval=24,
        video_kbps=8000.0,
        peak_video_kbps=12000.0,
        audio_codec="aac",
        audio_rate=48000,
        audio_channels=2,
        audio_kbps=300.0,
        audio_duration=2.0,
        loudness_lufs=-14.2,
        true_peak_db=-1.3,
    )
    return replace(facts, **changes)


EXPECTED = Expected(48, 1920, 1080, Fraction(24), True)


def failed(report) -> set[str]:
    return {c.name for c in report.failures}


def test_a_good_output_passes_every_check(preset) -> None:
    report = evaluate(good_facts(), preset, file="x.mp4", expected=EXPECTED)
    assert report.passed and report.verified, report.text()
    names = {c.name for c in report.checks}
    assert {"frames", "video codec", "faststart", "GOP", "loudness", "true peak"} <= names


@pytest.mark.parametrize(
    ("change", "check", "required"),
    [
        ({"frames": 47}, "frames", True),
        ({"width": 1280}, "frame size", True),
        ({"fps": "25/1"}, "frame rate", True),
        ({"video_codec": "hevc"}, "video codec", True),
        ({"video_streams": 2}, "video streams", True),
        ({"colour": {"matrix": "bt470bg", "transfer": "bt709", "primaries": "bt709",
                     "range": "tv"}}, "colour matrix", True),
        ({"audio_codec": "mp3"}, "audio codec", True),
        ({"audio_rate": 44100}, "audio rate", True),
        ({"audio_duration": 1.5}, "audio length", True),
        ({"audio_duration": None}, "audio length", True),
        ({"top_level_boxes": ["ftyp", "mdat", "moov"]}, "faststart", False),
        ({"edit_lists": 1}, "edit lists", False),
        ({"max_keyframe_interval": 30}, "GOP", False),
        ({"video_kbps": 25000.0}, "bitrate", False),
        ({"loudness_lufs": -20.0}, "loudness", False),
        ({"true_peak_db": 0.5}, "true peak", False),
        ({"video_profile": "High 4:4:4 Predictive"}, "profile", False),
        ({"sar": "4:3"}, "square pixels", False),
    ],
)  # fmt: skip
def test_each_miss_fails_its_own_check(preset, change, check: str, required: bool) -> None:
    report = evaluate(good_facts(**change), preset, file="x.mp4", expected=EXPECTED)
    assert failed(report) == {check}, report.text()
    assert report.verified is not required


def test_without_qc_only_the_required_checks_run(preset) -> None:
    facts = good_facts(top_level_boxes=["ftyp", "mdat", "moov"], video_kbps=99999.0)
    report = evaluate(facts, preset, file="x.mp4", expected=EXPECTED, qc=False)
    assert report.passed and all(c.required for c in report.checks)


def test_missing_and_unexpected_audio(preset) -> None:
    none = good_facts(audio_streams=0, audio_codec=None, audio_duration=None)
    ok = evaluate(none, preset, file="x", expected=replace(EXPECTED, audio=False))
    assert ok.passed, ok.text()
    assert "audio" in failed(evaluate(none, preset, file="x", expected=EXPECTED))
    extra = evaluate(good_facts(), preset, file="x", expected=replace(EXPECTED, audio=False))
    assert failed(extra) == {"audio"}


def test_a_stand_alone_check_uses_the_preset_size(preset) -> None:
    assert failed(evaluate(good_facts(width=1280, height=720), preset, file="x")) == {"frame size"}


def test_matroska_audio_length_comes_from_its_packets() -> None:
    packets = [{"pts_time": f"{i * 0.021333:.6f}", "duration_time": "0.021333"} for i in range(94)]
    assert _audio_duration({"codec_type": "audio"}, packets) == pytest.approx(2.0053, abs=1e-3)
    assert _audio_duration({"duration": "1.5"}, packets) == 1.5
    assert _audio_duration(None, packets) is None


# -- MP4 boxes ----------------------------------------------------------------------------------


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_mp4_box_order_and_edit_lists(tmp_path: Path) -> None:
    moov = box(b"moov", box(b"mvhd", b"\0" * 8) + box(b"trak", box(b"edts", box(b"elst"))))
    f = tmp_path / "a.mp4"
    f.write_bytes(box(b"ftyp", b"isom") + moov + box(b"mdat", b"x" * 100))
    assert mp4_boxes(f) == (["ftyp", "moov", "mdat"], 1)
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"abcd"  # 64-bit size form
    f.write_bytes(box(b"ftyp") + large + box(b"moov"))
    assert mp4_boxes(f) == (["ftyp", "mdat", "moov"], 0)
    f.write_bytes(box(b"ftyp") + struct.pack(">I4s", 3, b"bad!"))  # a size below its header
    assert mp4_boxes(f) == (["ftyp"], 0)


# -- daemon config ------------------------------------------------------------------------------


def test_config_defaults_and_values() -> None:
    cfg = parse_config('root = "/srv/x"\nworkers = 2\nsettle_seconds = 1.5\n', source="c.toml")
    assert (cfg.root, cfg.workers, cfg.settle_seconds) == (Path("/srv/x"), 2, 1.5)
    assert cfg.db == Path("/srv/x/queue.db") and cfg.hot == Path("/srv/x/hot")
    assert parse_config("", source="c").batch_window == DaemonConfig(Path("/")).batch_window


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rooot = 1", "unknown key 'rooot'"),
        ("workers = true", "workers = True has the wrong type"),
        ("workers = -1", "must be >= 0"),
        ("log_level = 'LOUD'", "log_level must be"),
        ("root = ", "not valid TOML"),
    ],
)
def test_config_problems_are_named(text: str, message: str) -> None:
    with pytest.raises(AppError, match=message):
        parse_config(text, source="c.toml")


# -- intake -------------------------------------------------------------------------------------


def test_a_file_is_ready_only_after_holding_still() -> None:
    p = Pending(-1, -1.0, 0.0)
    assert p.observe(100, 1.0, now=0.0)  # first look
    assert not p.settled(1.0, settle=3.0)
    assert p.observe(200, 2.0, now=2.5)  # still growing: the clock restarts
    assert not p.observe(200, 2.0, now=5.0) and not p.settled(5.0, settle=3.0)
    assert p.settled(5.5, settle=3.0)


def test_close_events_only_restart_the_clock() -> None:
    p = Pending(-1, -1.0, 0.0)
    p.observe(100, 1.0, now=10.0)
    p.touch(12.0)  # a writer closed (and may reopen) the file
    assert not p.settled(14.0, settle=3.0) and p.settled(15.0, settle=3.0)


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("clip.mp4", False), ("Clip.MOV", False), (".hidden.mp4", True), ("~lock.mp4", True),
        ("clip.mp4~", True), ("clip.mp4.part", True), ("x.crdownload", True),
        ("clip.mp4.error.txt", True), ("notes.txt", True), ("a.jpg", True),
    ],
)  # fmt: skip
def test_ignore_rules(name: str, ignored: bool) -> None:
    assert is_ignored(Path("/hot/p") / name) is ignored


# -- sequences ----------------------------------------------------------------------------------


def test_sequence_order_from_names_or_manifest(preset) -> None:
    names = ["b.mp4", "a.mp4", "c.mp4"]
    assert plan_sequence(names, preset, None) == Sequence(("a.mp4", "b.mp4", "c.mp4"), 0)
    seq = plan_sequence(names, preset, {"order": ["c.mp4", "a.mp4"], "crossfade_frames": 6})
    assert seq == Sequence(("c.mp4", "a.mp4"), 6)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"order": ["z.mp4"]}, "not in the batch"),
        ({"order": ["a.mp4", "a.mp4"]}, "twice"),
        ({"order": "a.mp4"}, "must be a list"),
        ({"crossfade_frames": -1}, "0..600"),
        ({"crossfade_frames": True}, "0..600"),
        ({"speed": 2}, "unknown key"),
    ],
)
def test_manifest_problems_are_named(preset, manifest, message: str) -> None:
    with pytest.raises(AppError, match=message):
        plan_sequence(["a.mp4", "b.mp4"], preset, manifest)


# -- names, logs, artifacts ---------------------------------------------------------------------


def test_long_names_are_shortened_with_a_hash() -> None:
    assert short_name("clip") == "clip"
    long = "é" * 200  # 400 bytes
    a, b = short_name(long), short_name(long + "x")
    assert len(a.encode()) <= 150 and a != b and "~" in a
    assert short_name("bad\udcff" * 60, limit=50).encode("utf-8", "surrogateescape")


def test_log_lines_parse_back() -> None:
    line = parse_line("2026-11-23 10:00:01,000 ERROR   job=4 daemon.runtime.worker: x: boom")
    assert (line.level, line.job, line.logger, line.message) == (
        "ERROR",
        "4",
        "daemon.runtime.worker",
        "x: boom",
    )
    assert parse_line("garbage").level == "INFO"


def test_artifacts_round_trip(tmp_path: Path) -> None:
    res = A.JobResult("/o.mp4", 48, (1920, 1080), "24/1", {"encode": 1.5})
    A.write_result(tmp_path, res)
    assert A.read_result(tmp_path) == res
    plan = A.ClipPlan(
        "/a.mp4", Tuning(0.5, 1.2, True, 0.3, "degrain"), tmp_path / "a.cube", tmp_path / "a.j"
    )
    A.write_plans(tmp_path, {"7": plan})
    assert A.read_plans(tmp_path) == {"7": plan}
    summary = A.BatchSummary("a.mp4", "marked", {"b.mp4": A.ClipDecision(False, "too different")})
    A.write_batch(tmp_path, summary)
    assert A.read_batch(tmp_path) == summary and summary.not_applied() == {"b.mp4": "too different"}
    (tmp_path / A.PROBE).write_text("{not json")
    assert A.read_probe(tmp_path) is None and A.read_result(tmp_path / "nowhere") is None


def test_a_name_cannot_forge_a_log_line() -> None:
    import logging

    from daemon.runtime.logs import FORMAT, _OneLineFormatter

    record = logging.LogRecord(
        "daemon.runtime.intake", logging.INFO, __file__, 1, "queued %s", ("a\nFAKE ERROR\x1b[31m",),
        None,
    )  # fmt: skip
    record.job = "7"
    text = _OneLineFormatter(FORMAT).format(record)
    assert "\n" not in text and "\x1b" not in text and "\\x0a" in text
    assert parse_line(text).job == "7"
