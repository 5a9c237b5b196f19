"""Platform delivery: every shipped preset passes its own QC, QC names what is wrong, vertical
reframing, and sequence assembly with crossfades and audio in sync."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from daemon.engine.finish import Engine
from daemon.engine.presets import builtin_dir, load_preset_file
from tests.conftest import DATA, ffmpeg
from tests.helpers import finishline, loudness, psnr, streams

SHIPPED = sorted(p.stem for p in builtin_dir().glob("*.toml"))
#: presets that deliver 3840x2160: their full render (Real-ESRGAN to 4K on the CPU) is `slow`;
#: the default run keeps a script smoke test for every preset
UHD = {n for n in SHIPPED if load_preset_file(builtin_dir() / f"{n}.toml").frame.width >= 3840}
RENDERS = [pytest.param(n, marks=pytest.mark.slow) if n in UHD else n for n in SHIPPED]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FINISHLINE_MODELS", str(models_dir))
    return tmp_path


def gray_frame(path: Path, index: int, *, vf: str = "", size: tuple[int, int]) -> np.ndarray:
    """One frame decoded to RGB (each file by its own colour tags), as the mean of R, G and B,
    after an optional ffmpeg filter chain ending at ``size``."""
    chain = f"select=eq(n\\,{index}),{vf + ',' if vf else ''}scale={size[0]}:{size[1]},format=rgb24"
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "file:" + str(path),
            "-vf",
            chain,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3).astype(np.float64).mean(axis=2)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_gives_a_script_that_loads(name: str, env: Path, clip_factory) -> None:
    """The fast smoke for each preset: its script is written, loads in vspipe and plans the
    preset's size and the expected frame count (nothing is encoded)."""
    src = clip_factory("ai.mp4", size="160x90", fps="12", seconds=1.0)
    preset = load_preset_file(builtin_dir() / f"{name}.toml")
    job = Engine(preset, work_root=env / "work").prepare(src)
    assert job.script.is_file() and "vs_scripts.runtime" in job.script.read_text()
    assert (job.plan.width, job.plan.height) == (preset.frame.width, preset.frame.height)
    assert job.plan.frame_count == round(float(job.plan.fps))  # one second of output


@pytest.mark.parametrize("name", RENDERS)
def test_every_shipped_preset_renders_a_clip_that_passes_its_own_qc(
    name: str, env: Path, clip_factory
) -> None:
    src = clip_factory("ai.mp4", size="160x90", fps="12", seconds=1.0)
    out_dir = env / "out"
    res = finishline("process", str(src), "--preset", name, "-o", str(out_dir))
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip())
    report = json.loads(out.with_name(out.stem + ".qc.json").read_text())
    assert report["passed"], report
    checked = {c["name"] for c in report["checks"]}
    assert {"video codec", "frame size", "colour matrix", "loudness", "true peak"} <= checked
    again = finishline("qc", str(out), "--preset", name)
    assert again.returncode == 0, again.stdout + again.stderr
    preset = load_preset_file(builtin_dir() / f"{name}.toml")
    assert loudness(out) == pytest.approx(preset.audio.loudness_lufs, abs=1.0)
    if preset.qc.faststart:
        assert "faststart" in checked and (preset.qc.edit_lists or "edit lists" in checked)


def test_a_wrong_encode_fails_qc_and_names_each_reason(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=1",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "250",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        "file:" + str(wrong),
    )  # no faststart, AAC edit list, wrong codec/size/rate/GOP
    res = finishline("qc", str(wrong), "--preset", "youtube-1080p")
    assert res.returncode == 1
    failed = {
        line.split("FAIL", 1)[1].split()[0] for line in res.stdout.splitlines() if "FAIL" in line
    }
    lines = "\n".join(line for line in res.stdout.splitlines() if "FAIL" in line)
    assert "FAILED" in res.stdout.splitlines()[0]
    for reason in (
        "video codec",
        "profile",
        "pixel format",
        "frame size",
        "GOP",
        "faststart",
        "edit lists",
        "audio rate",
        "loudness",
    ):
        assert reason in lines, f"{reason} not reported:\n{res.stdout}"
    assert "frame" in failed
    as_json = json.loads(finishline("qc", str(wrong), "--preset", "youtube-1080p", "--json").stdout)
    assert as_json["passed"] is False


def test_a_job_whose_output_fails_qc_is_not_delivered(env: Path, clip_factory) -> None:
    preset = env / "strict.toml"
    preset.write_text(
        (DATA / "presets_ok" / "small-x265.toml").read_text().replace("crf = 28.0", "crf = 0.0")
        + "\n[qc]\nmax_video_kbps = 100\n"
    )
    src = clip_factory("ai.mp4", size="160x90", fps="12", seconds=1.0)
    before = src.read_bytes()
    out = env / "o" / "x.mp4"
    res = finishline("process", str(src), "--preset", str(preset), "-o", str(out))
    assert res.returncode == 1
    assert "failed QC against preset strict" in res.stderr and "bitrate" in res.stderr
    assert not out.exists() and not list(out.parent.glob("*.mp4"))
    # its before/after still, drawn while it was checked, is neither delivered nor left behind
    assert not list(out.parent.glob("*.png")) and not list((env / "cache").rglob("*.png"))
    assert src.read_bytes() == before


def test_16_9_clip_comes_out_1080x1920_without_stretching(env: Path, clip_factory) -> None:
    src = clip_factory("wide.mp4", size="640x360", fps="12", seconds=0.5)
    res = finishline("process", str(src), "--preset", "vertical-1080x1920", "-o", str(env / "v"))
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip())
    v = streams(out)["video"]
    assert (v["width"], v["height"], v.get("sample_aspect_ratio", "1:1")) == (1080, 1920, "1:1")
    # the whole picture sits in the middle band at its own aspect ratio (1080x608)...
    band = gray_frame(out, 0, vf="crop=1080:608:0:656", size=(320, 180))
    fitted = gray_frame(src, 0, size=(320, 180))
    stretched = gray_frame(src, 0, vf="scale=1080:1920,crop=1080:608:0:656", size=(320, 180))
    assert psnr(band, fitted) > 24
    assert psnr(band, fitted) > psnr(band, stretched) + 6
    # ...over a blurred fill of itself, not black bars
    top = gray_frame(out, 0, vf="crop=1080:600:0:0", size=(108, 60))
    assert top.mean() > 20 and top.std() < fitted.std()


def test_saliency_crop_follows_the_subject(env: Path) -> None:
    src = env / "subject-right.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=0x303030:size=640x360:rate=12:duration=1",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=120x120:rate=12:duration=1",
        "-filter_complex",
        "[0][1]overlay=x=480:y='100+60*sin(t*6)'",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "file:" + str(src),
    )
    preset = env / "reels-saliency.toml"
    preset.write_text(
        (builtin_dir() / "vertical-1080x1920.toml")
        .read_text()
        .replace('fit = "blur"', 'fit = "saliency"')
        .replace('method = "rife"', 'method = "repeat"')
        .replace('model = "realesr-animevideov3"', 'model = "off"')
    )
    res = finishline("process", str(src), "--preset", str(preset), "-o", str(env / "s"))
    assert res.returncode == 0, res.stderr
    out = Path(res.stdout.strip())
    assessment = json.loads(out.with_name(out.stem + ".assessment.json").read_text())
    assert assessment["crop_focus"] > 0.8  # the subject is at the right edge
    frame = gray_frame(out, 0, size=(108, 192))
    centre = gray_frame(src, 0, vf="crop=202:360:219:0", size=(108, 192))  # a centre crop
    assert frame.std() > 3 * centre.std(), "the crop should show the subject, not the wall"


def flash_clip(path: Path, flash_at: int, *, audio: bool = True) -> Path:
    """24 fps, 1 s, black with two white frames from ``flash_at``, and a 1 kHz beep starting
    exactly then (silence elsewhere)."""
    t0 = flash_at / 24
    args = ["-f", "lavfi", "-i", "color=c=black:size=160x90:rate=24:duration=1"]
    if audio:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc='if(between(t,{t0:.6f},{t0 + 2 / 24:.6f}),0.5*sin(2*PI*1000*t),0)'"
            ":s=48000:d=1",
            "-c:a",
            "pcm_s16le",
        ]
    ffmpeg(
        *args,
        "-vf",
        f"drawbox=enable='between(n,{flash_at},{flash_at + 1})':color=white:t=fill",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "file:" + str(path),
    )
    return path


def flash_times(path: Path) -> list[float]:
    res = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "file:" + str(path),
            "-vf",
            "scale=16:9,format=gray",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    means = np.frombuffer(res.stdout, np.uint8).reshape(-1, 9 * 16).mean(axis=1)
    bright = means > 128
    return [i / 24 for i in range(len(bright)) if bright[i] and (i == 0 or not bright[i - 1])]


def beep_times(path: Path) -> list[float]:
    res = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            "file:" + str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            "48000",
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
        check=True,
    )
    x = np.abs(np.frombuffer(res.stdout, np.float32))
    env = np.convolve(x, np.ones(96) / 96, mode="same")  # 2 ms
    loud = env > 0.25 * env.max()
    return [i / 48000 for i in range(1, len(loud)) if loud[i] and not loud[i - 1]]


def test_three_clips_assemble_with_crossfades_and_audio_in_sync(env: Path) -> None:
    clips = [flash_clip(env / f"{n}.mov", at) for n, at in (("a", 12), ("b", 10), ("c", 14))]
    preset = env / "seq.toml"
    preset.write_text(
        (DATA / "presets_ok" / "small-x265.toml").read_text()
        + "\n[colour]\nstabilise = false\nmatch = false\n"
    )
    res = finishline(
        "process",
        *map(str, clips),
        "--preset",
        str(preset),
        "-o",
        str(env / "o"),
        "--assemble",
        "reel",
        "--crossfade",
        "6",
    )
    assert res.returncode == 0, res.stderr
    seq = Path(res.stdout.strip().splitlines()[-1])
    assert seq.name == "reel.seq.mp4"
    s = streams(seq)
    assert int(s["video"]["nb_read_packets"]) == 3 * 24 - 2 * 6  # the sum minus the crossfades
    assert float(s["format"]["duration"]) == pytest.approx(2.5, abs=1 / 24)
    assert float(s["audio"]["duration"]) == pytest.approx(2.5, abs=1 / 24)
    # each clip starts 18 frames (24 - 6) after the previous one
    want = [12 / 24, (18 + 10) / 24, (36 + 14) / 24]
    flashes, beeps = flash_times(seq), beep_times(seq)
    assert flashes == pytest.approx(want, abs=0.5 / 24)
    assert len(beeps) == 3
    for f, b in zip(flashes, beeps, strict=True):
        assert abs(f - b) < 1 / 24, f"audio {b:.3f}s vs picture {f:.3f}s"
    assert json.loads(seq.with_name("reel.seq.qc.json").read_text())["passed"]
