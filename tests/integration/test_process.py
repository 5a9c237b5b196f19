"""End to end: real ffmpeg, real vspipe, real VapourSynth plugins, tiny generated clips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ffmpeg, make_clip
from tests.helpers import BIN, digest, finishline, loudness, streams


def test_12fps_640x360_with_audio_to_youtube_1080p(
    clip_factory, tmp_path: Path, monkeypatch, models_dir: Path
) -> None:
    """The single-clip 'done when': 12 fps 640x360 with audio -> 1920x1080 deliverable, through
    the full shipped preset (RIFE to the natural 24 fps, Real-ESRGAN, HEVC, AAC, -14 LUFS)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FINISHLINE_MODELS", str(models_dir))
    src = clip_factory("ai.mp4", size="640x360", fps="12", seconds=1.0)
    before = digest(src)
    out = tmp_path / "out" / "ai.mp4"
    res = finishline("process", str(src), "--preset", "youtube-1080p", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    s = streams(out)
    v, a = s["video"], s["audio"]
    assert (v["codec_name"], v["profile"], v["width"], v["height"]) == (
        "hevc",
        "Main 10",
        1920,
        1080,
    )
    assert v["r_frame_rate"] == "24/1" and int(v["nb_read_packets"]) == 24
    assert (v["color_space"], v["color_transfer"], v["color_primaries"], v["color_range"]) == (
        "bt709",
        "bt709",
        "bt709",
        "tv",
    )
    assert (a["codec_name"], a["sample_rate"]) == ("aac", "48000")
    assert float(a["duration"]) == pytest.approx(1.0, abs=0.03)
    assert float(v["start_time"]) == pytest.approx(0.0, abs=1e-3)  # no frames before the edit
    assert loudness(out) == pytest.approx(-14.0, abs=1.0)
    assert digest(src) == before, "the source must never be modified"
    assert not list(out.parent.glob(".*partial*"))
    still = streams(out.with_name("ai.compare.png"))["video"]  # wholes above, 1:1 crops below
    assert (still["codec_name"], still["width"], still["height"]) == ("png", 960, 540)
    work = next(
        p
        for p in (tmp_path / "cache" / "finishline" / "jobs").iterdir()
        if p.is_dir() and not p.name.startswith("batch-")
    )
    assert (work / "script.vpy").exists() and (work / "probe.json").exists()


@pytest.mark.slow
def test_master_4k_prores(clip_factory, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = clip_factory("silent.mp4", size="320x180", fps="24", seconds=0.25, audio=False)
    out = tmp_path / "master.mov"
    res = finishline("process", str(src), "--preset", "master-4k-prores", "-o", str(out))
    assert res.returncode == 0, res.stderr
    s = streams(out)
    v, a = s["video"], s["audio"]
    assert (v["codec_name"], v["profile"], v["pix_fmt"]) == ("prores", "HQ", "yuv422p10le")
    assert (v["width"], v["height"], int(v["nb_read_packets"])) == (3840, 2160, 6)
    assert v["color_primaries"] == "bt709"
    # no source audio: the master gets 24-bit silence of the video's length
    assert (a["codec_name"], a["sample_rate"], a["bits_per_raw_sample"]) == (
        "pcm_s24le",
        "48000",
        "24",
    )
    assert float(a["duration"]) == pytest.approx(0.25, abs=0.01)


def test_odd_size_is_letterboxed(clip_factory, tmp_path: Path, test_presets) -> None:
    src = clip_factory("odd.mp4", size="322x240", fps="12", seconds=0.5)
    out = tmp_path / "odd.mp4"
    res = finishline("process", str(src), "--preset", "small-x265", "-o", str(out))
    assert res.returncode == 0, res.stderr
    v = streams(out)["video"]
    assert (v["width"], v["height"], int(v["nb_read_packets"])) == (320, 180, 6)
    # pillarboxed: the left column is black (Y = 64 in 10-bit limited range)
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(out),
            "-frames:v",
            "1",
            "-vf",
            "crop=4:180:0:0",
            "-pix_fmt",
            "gray",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert max(raw) <= 20


def test_vfr_source_to_cfr_24(vfr_clip: Path, tmp_path: Path, test_presets) -> None:
    out = tmp_path / "vfr.mp4"
    res = finishline("process", str(vfr_clip), "--preset", "small-x264-silence", "-o", str(out))
    assert res.returncode == 0, res.stderr
    s = streams(out)
    v, a = s["video"], s["audio"]
    assert v["r_frame_rate"] == "24/1" and int(v["nb_read_packets"]) == 48
    assert (v["width"], v["height"]) == (256, 256)
    assert float(a["duration"]) == pytest.approx(2.0, abs=0.05)


def test_no_audio_gets_none_or_silence(clip_factory, tmp_path: Path, test_presets) -> None:
    src = clip_factory("mute.mp4", size="160x90", fps="24", seconds=0.5, audio=False)
    none = tmp_path / "none.mp4"
    assert (
        finishline("process", str(src), "--preset", "small-x265", "-o", str(none)).returncode == 0
    )
    assert "audio" not in streams(none)
    silent = tmp_path / "silent.mp4"
    res = finishline("process", str(src), "--preset", "small-x264-silence", "-o", str(silent))
    assert res.returncode == 0, res.stderr
    assert float(streams(silent)["audio"]["duration"]) == pytest.approx(0.5, abs=0.03)


HOSTILE = [
    "with space.mp4",
    'quote\'s "double".mp4',
    "ünïcødé клип 🎬.mp4",
    "$(touch PWNED).mp4",
    "-leading-dash.mp4",
    "semi;colon&amp|pipe`tick`.mp4",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names(name: str, tmp_path: Path, test_presets) -> None:
    src = make_clip(tmp_path / name, size="160x90", fps="12", seconds=0.5)
    out_dir = tmp_path / "out dir $(x)"
    res = finishline("process", "--preset", "small-x265", "-o", str(out_dir), "--", str(src))
    assert res.returncode == 0, res.stderr
    produced = list(out_dir.glob("*.mp4"))
    assert list(out_dir.glob("*.assessment.json"))
    assert len(produced) == 1 and produced[0].name.startswith(name.removesuffix(".mp4"))
    assert int(streams(produced[0])["video"]["nb_read_packets"]) == 6
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    good = make_clip(tmp_path / "good.mp4", size="160x90", fps="12", seconds=1.0)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(good), "-c", "copy", "-movflags", "+faststart", str(faststart))
    cut = tmp_path / "cut-mdat.mp4"  # header intact, frames missing: fails at decode, not probe
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    return {"empty": empty, "text": text, "truncated": truncated, "cut-mdat": cut}


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "cut-mdat"])
def test_bad_input_is_a_clear_error_and_loses_nothing(
    kind: str, tmp_path: Path, test_presets
) -> None:
    src = _bad_inputs(tmp_path)[kind]
    before = digest(src)
    out = tmp_path / "out" / "x.mp4"
    res = finishline("process", str(src), "--preset", "small-x265", "-o", str(out))
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finishline: error: ") and str(src) in err[0]
    assert "Traceback" not in res.stderr
    assert digest(src) == before
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_existing_output_is_not_overwritten(clip_factory, tmp_path: Path, test_presets) -> None:
    src = clip_factory("tiny.mp4", size="160x90", fps="12", seconds=0.5)
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"precious")
    res = finishline("process", str(src), "--preset", "small-x265", "-o", str(out))
    assert res.returncode == 1 and "--overwrite" in res.stderr
    assert out.read_bytes() == b"precious"
    assert (
        finishline(
            "process", str(src), "--preset", "small-x265", "-o", str(out), "--overwrite"
        ).returncode
        == 0
    )
    assert int(streams(out)["video"]["nb_read_packets"]) == 6


def test_several_inputs_into_a_folder(clip_factory, tmp_path: Path, test_presets) -> None:
    a = clip_factory("a.mp4", size="160x90", fps="12", seconds=0.5)
    b = clip_factory("b.mp4", size="160x90", fps="24", seconds=0.5)
    res = finishline("process", str(a), str(b), "--preset", "small-x265", "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.mp4")) == [
        "a.small-x265.mp4",
        "b.small-x265.mp4",
    ]
    assert (tmp_path / "o" / "a.small-x265.assessment.json").exists()


def test_probe_cli(clip_factory) -> None:
    src = clip_factory("probe.mp4", size="160x90", fps="12", seconds=1.0)
    res = finishline("probe", "--json", str(src))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert (info["width"], info["height"], info["fps"], info["frame_count"]) == (
        160,
        90,
        "12/1",
        12,
    )
    assert info["audio"][0]["sample_rate"] == 44100 and not info["vfr"]
    assert info["keyframes"] and info["keyframes"][0] == 0.0
    human = finishline("probe", str(src)).stdout
    assert "160x90" in human and "CFR" in human
    n = len(info["keyframes"])
    assert f"keyframes: {n} (one every {1.0 / n:.2f}s on average)" in human


def test_probe_detects_vfr(vfr_clip: Path) -> None:
    info = json.loads(finishline("probe", "--json", str(vfr_clip)).stdout)
    assert info["vfr"] and info["frame_count"] == 36


def test_rendered_script_streams_y4m(clip_factory, tmp_path: Path, test_presets) -> None:
    """vspipe on a rendered script: stdout is a clean y4m stream with the planned frames."""
    src = clip_factory("y4m.mp4", size="160x90", fps="12", seconds=1.0)
    script = tmp_path / "s.vpy"
    res = finishline("render", str(src), "--preset", "small-x265")
    assert res.returncode == 0, res.stderr
    script.write_text(res.stdout)
    info = subprocess.run(
        [str(BIN / "vspipe"), "--info", "--arg", f"src={src}", str(script), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Width: 320" in info and "Frames: 12" in info
    out = subprocess.run(
        [str(BIN / "vspipe"), "-c", "y4m", "-e", "9", "--arg", f"src={src}", str(script), "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert out.startswith(b"YUV4MPEG2 ")
    assert out.count(b"FRAME\n") == 10


def test_relative_paths(clip_factory, tmp_path: Path, test_presets) -> None:
    """vspipe runs scripts from their own folder; relative inputs must still be found."""
    src = clip_factory("rel.mp4", size="160x90", fps="12", seconds=0.5)
    (tmp_path / "rel.mp4").write_bytes(src.read_bytes())
    res = finishline(
        "process", "rel.mp4", "--preset", "small-x265", "-o", "out/rel.mp4", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert int(streams(tmp_path / "out" / "rel.mp4")["video"]["nb_read_packets"]) == 6


def test_a_plain_pass_keeps_levels_and_colours(tmp_path: Path) -> None:
    """No restoration, no AI: the output must show the source's picture. Guards the two colour
    bugs found on the bench: full-range pixels tagged limited (resize's numeric range is the
    opposite of _ColorRange) and a guessed SMPTE-C -> BT.709 gamut conversion of untagged SD."""
    import numpy as np

    src = tmp_path / "bars.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=12:duration=0.5",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
            "file:" + str(src),
        ],
        check=True,
    )  # untagged SD
    preset = tmp_path / "plain.toml"
    preset.write_text(
        "[restore]\nauto = false\n[colour]\nmatch = false\nstabilise = false\n"
        '[video]\nencoder = "x264"\npixel_format = "yuv420p"\ncrf = 1.0\n'
        'speed = "ultrafast"\n[audio]\ncodec = "none"\n'
    )
    out = tmp_path / "plain.mp4"
    res = finishline("process", str(src), "--preset", str(preset), "-o", str(out))
    assert res.returncode == 0, res.stderr

    def rgb(path: Path) -> np.ndarray:
        raw = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-i",
                "file:" + str(path),
                "-frames:v",
                "1",
                "-vf",
                "format=rgb24",
                "-f",
                "rawvideo",
                "-",
            ],
            capture_output=True,
            check=True,
        ).stdout
        return np.frombuffer(raw, np.uint8).astype(np.float64)

    a, b = rgb(src), rgb(out)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    assert psnr > 35, f"the plain pass changed the picture: {psnr:.1f} dB"
    assert abs(a.mean() - b.mean()) < 1.0
