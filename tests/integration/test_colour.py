"""Assessment, colour matching across a batch, LUTs and flicker removal on generated clips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from daemon.analysis import grading as colour
from tests.conftest import ffmpeg
from tests.helpers import finishline, media_info

SIZE = "192x108"


def scene_clip(
    path: Path,
    *,
    cast: str = "",
    crop_x: int = 0,
    source: str = "testsrc2",
    seconds: float = 1.0,
    extra: str = "",
) -> Path:
    """One 'scene' (lavfi testsrc2, slowly panned by a crop) with an optional cast filter."""
    vf = f"crop=192:108:{crop_x}+t*8:0"
    if cast:
        vf += "," + cast
    if extra:
        vf += "," + extra
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"{source}=size=256x108:rate=12:duration={seconds}",
        "-vf",
        vf,
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "yuv444p",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-colorspace",
        "bt709",
        str(path),
    )
    return path


def mean_lab(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-vf",
            "scale=in_color_matrix=bt709:out_color_matrix=bt709",
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    rgb = np.frombuffer(raw, np.uint8).reshape(-1, 3) / 255.0
    return colour.rgb_to_lab(rgb).mean(axis=0)


CASTS = {
    "warm": "colorchannelmixer=rr=1.10:bb=0.88",
    "cool-flat": "colorchannelmixer=rr=0.92:bb=1.08,eq=contrast=0.88:saturation=0.85",
    "bright": "eq=gamma=1.15:saturation=1.2",
}


def test_batch_of_one_scene_matches_the_reference(tmp_path: Path, test_presets) -> None:
    src = tmp_path / "in"
    src.mkdir()
    ref = scene_clip(src / "shot_ref.mkv")
    clips = [ref] + [scene_clip(src / f"shot_{k}.mkv", cast=v) for k, v in CASTS.items()]
    out = tmp_path / "out"
    res = finishline("process", *map(str, clips), "--preset", "small-colour", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "reference look: shot_ref.mkv (marked as the reference" in res.stderr
    # the same clips uncorrected, for "before"
    target = mean_lab(out / "shot_ref.small-colour.mkv")
    for k in CASTS:
        before = colour.delta_e(mean_lab(src / f"shot_{k}.mkv"), mean_lab(ref))
        after = colour.delta_e(mean_lab(out / f"shot_{k}.small-colour.mkv"), target)
        assert after < 0.5 and after < before / 3, (k, before, after)
        cube = out / f"shot_{k}.small-colour.cube"
        assert cube.exists() and (out / f"shot_{k}.small-colour.assessment.json").exists()


def test_another_scene_is_left_alone_and_flagged(tmp_path: Path, test_presets) -> None:
    ref = scene_clip(tmp_path / "beach_ref.mkv")
    forest = tmp_path / "forest.mkv"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=0x1c3318:size=192x108:rate=12:duration=1",
        "-vf",
        "noise=alls=30:allf=t,gblur=sigma=2",
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "yuv444p",
        str(forest),
    )
    res = finishline(
        "process", str(ref), str(forest), "--preset", "small-colour", "-o", str(tmp_path / "out")
    )
    assert res.returncode == 0, res.stderr
    assert "forest.mkv: too different from the reference to match" in res.stderr
    assert not (tmp_path / "out" / "forest.small-colour.cube").exists()
    before, after = mean_lab(forest), mean_lab(tmp_path / "out" / "forest.small-colour.mkv")
    beach = mean_lab(tmp_path / "out" / "beach_ref.small-colour.mkv")
    # not pushed into the beach look (denoising the heavy grain moves it a little, no more)
    assert colour.delta_e(before, after) < 5.0
    assert colour.delta_e(after, beach) > 20.0


def test_cube_loads_in_ffmpeg_and_reproduces_the_script(tmp_path: Path, test_presets) -> None:
    ref = scene_clip(tmp_path / "a_ref.mkv")
    warm = scene_clip(tmp_path / "b.mkv", cast=CASTS["warm"])
    out = tmp_path / "out"
    res = finishline("process", str(ref), str(warm), "--preset", "small-lut", "-o", str(out))
    assert res.returncode == 0, res.stderr
    cube = out / "b.small-lut.cube"
    lines = cube.read_text().splitlines()
    assert "LUT_3D_SIZE 33" in lines and len([ln for ln in lines if ln[:1].isdigit()]) == 33**3
    via_ffmpeg = tmp_path / "ffmpeg-lut3d.mkv"
    # RGB for lut3d through the clip's own matrix (ffmpeg would otherwise assume BT.601)
    ffmpeg(
        "-i",
        str(warm),
        "-vf",
        "scale=in_color_matrix=bt709:out_color_matrix=bt709,"
        f"format=gbrp,lut3d=file='{cube}':interp=tetrahedral",
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "gbrp",
        str(via_ffmpeg),
    )
    # ffmpeg's lut3d on the source vs finishline's script (LUT only, no other stage). The
    # residual (measured 1.2) is ffmpeg's own 8-bit YUV->RGB path, not the table.
    assert colour.delta_e(mean_lab(via_ffmpeg), mean_lab(out / "b.small-lut.mkv")) < 1.5


def test_flicker_removal_with_known_gains(tmp_path: Path, test_presets) -> None:
    steady = scene_clip(tmp_path / "steady.mkv", seconds=2.0)
    flick = tmp_path / "flicker.mkv"
    # a brightness that jumps every frame: about +-3 % alternating
    ffmpeg(
        "-i",
        str(steady),
        "-vf",
        "eq=brightness='0.015*(2*mod(n,2)-1)':eval=frame",
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "yuv444p",
        str(flick),
    )
    res = finishline("process", str(flick), "--preset", "small-colour", "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr

    def frame_means(p: Path, pixels: int) -> np.ndarray:
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(p), "-pix_fmt", "gray", "-f", "rawvideo", "-"],
            capture_output=True,
            check=True,
        ).stdout
        return np.frombuffer(raw, np.uint8).reshape(-1, pixels).mean(axis=1)

    def jitter(m: np.ndarray) -> float:
        d = np.diff(m)
        return float(np.std(d - np.convolve(d, np.ones(5) / 5, mode="same")))

    before = jitter(frame_means(flick, 192 * 108))
    after = jitter(frame_means(tmp_path / "o" / "flicker.small-colour.mkv", 160 * 90))
    assert after < before / 3, (before, after)


def test_assessment_moves_the_right_way(tmp_path: Path) -> None:
    clean = scene_clip(tmp_path / "clean.mkv", extra="gblur=sigma=2")  # smooth, like footage
    noisy = scene_clip(tmp_path / "noisy.mkv", extra="gblur=sigma=2,noise=alls=14:allf=t")
    blocky = tmp_path / "blocky.mp4"
    ffmpeg(
        "-i",
        str(clean),
        "-c:v",
        "mpeg2video",
        "-qscale:v",
        "31",
        "-qmin",
        "31",
        "-pix_fmt",
        "yuv420p",
        str(blocky.with_suffix(".m2v")),
    )
    ffmpeg("-i", str(blocky.with_suffix(".m2v")), "-c:v", "ffv1", str(blocky.with_suffix(".mkv")))
    kw = {"matrix": 1, "transfer": 1, "primaries": 1, "color_range": 1}
    a = colour.analyse_clip(str(clean), **kw)
    n = colour.analyse_clip(str(noisy), **kw)
    b = colour.analyse_clip(str(blocky.with_suffix(".mkv")), **kw)
    assert n.noise > a.noise + 2
    assert b.blockiness > a.blockiness * 1.1
    from vs_scripts.plan.preset import load_preset
    from vs_scripts.plan.render import tune

    preset = load_preset("")
    assert (
        tune(preset, noise=n.noise, blockiness=n.blockiness, lut=False).denoise_strength
        > tune(preset, noise=a.noise, blockiness=a.blockiness, lut=False).denoise_strength
    )
    assert (
        tune(preset, noise=b.noise, blockiness=b.blockiness, lut=False).deblock
        > tune(preset, noise=a.noise, blockiness=a.blockiness, lut=False).deblock
    )
    pinned = load_preset("[restore]\nauto = false\ndeblock = 0.2\n")
    assert tune(pinned, noise=9, blockiness=3, lut=False).deblock is None


@pytest.mark.parametrize("name", ["shot_ref.mp4", "Hero [ref].mov", "a-reference.mkv"])
def test_reference_marker_in_the_name(name: str) -> None:
    assert colour.is_marked_reference(name)
    assert not colour.is_marked_reference("prefix.mp4")


def test_registration_recovers_a_known_grade_from_two_framings(tmp_path: Path) -> None:
    """Two overlapping crops of one textured picture, one with a cast: the pixels the
    registration pairs up give back a grade that undoes the cast (moving subject included)."""
    still = tmp_path / "scene.png"
    ffmpeg("-f", "lavfi", "-i", "mandelbrot=size=480x270:rate=1", "-frames:v", "1", str(still))
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(still), "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
        capture_output=True,
        check=True,
    ).stdout
    scene = np.frombuffer(raw, np.uint8).reshape(270, 480, 3)
    ref = np.stack([scene[20 + i : 200 + i, 30 + 2 * i : 350 + 2 * i] for i in range(0, 12, 3)])
    plain = np.stack([scene[60 - i : 240 - i, 120 + i : 440 + i] for i in range(0, 12, 3)])
    cast = (0.8, 1.15, 1.1, 0.88, 1.1, 0.9, 0.01, 0.0, -0.01)  # flat, warm, darker
    src = (colour.apply_grade(plain / 255.0, cast) * 255).round().astype(np.uint8)
    src[:, 20:60, 20:80] = 255  # a subject that is not in the reference
    found = colour.register_pairs(src, ref)
    assert found is not None and len(found[0]) > 20000
    grade = colour.fit_grade(*found)
    fixed = colour.apply_grade(src / 255.0, grade)
    before = colour.delta_e(
        colour.rgb_to_lab((src / 255.0).reshape(-1, 3)).mean(0),
        colour.rgb_to_lab((plain / 255.0).reshape(-1, 3)).mean(0),
    )
    mask = np.ones(src.shape[:3], bool)
    mask[:, 20:60, 20:80] = False
    after = colour.delta_e(
        colour.rgb_to_lab(fixed[mask]).mean(0), colour.rgb_to_lab(plain[mask] / 255.0).mean(0)
    )
    assert before > 2.5 and after < min(0.5, before / 5), (before, after)
    # another scene does not register
    other = np.random.default_rng(1).integers(0, 255, ref.shape, dtype=np.uint8)
    assert colour.register_pairs(other, ref) is None


def test_assessment_chooses_the_denoiser_and_its_strength(tmp_path: Path) -> None:
    """denoise = "auto": a panned scene with grain that changes every frame gets the
    motion-compensated denoiser, stronger than the same scene without grain; a picture whose
    every frame is new (no motion to follow) gets the spatial one."""
    from vs_scripts.plan.preset import load_preset
    from vs_scripts.plan.render import render_script, tune

    clean = scene_clip(tmp_path / "clean.mkv", extra="gblur=sigma=1")
    grainy = scene_clip(tmp_path / "grainy.mkv", extra="gblur=sigma=1,noise=alls=10:allf=t")
    chaos = tmp_path / "chaos.mkv"
    ffmpeg("-f", "lavfi", "-i", "nullsrc=s=192x108:r=24:d=1,geq=lum='random(1)*255':cb=128:cr=128",
           "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(chaos))  # fmt: skip
    kw = {"matrix": 1, "transfer": 1, "primaries": 1, "color_range": 1}
    c, g, x = (colour.analyse_clip(str(p), **kw) for p in (clean, grainy, chaos))
    assert g.motion_fit < 0.7 and c.motion_fit < 0.7, (g.motion_fit, c.motion_fit)
    assert x.motion_fit > 0.85, x.motion_fit
    assert g.temporal_noise > c.temporal_noise + 1, (g.temporal_noise, c.temporal_noise)
    preset = load_preset('[restore]\ndenoise = "auto"\n')

    def tuned(st: colour.ClipStats):  # type: ignore[no-untyped-def]
        return tune(
            preset,
            noise=st.noise,
            blockiness=st.blockiness,
            lut=False,
            temporal_noise=st.temporal_noise,
            motion_fit=st.motion_fit,
        )

    # a still shot with shimmer: nothing moves, so the fit is ~1, but averaging it is right
    still = tmp_path / "still.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=192x108:r=1:d=1", "-vf", "fps=24,noise=alls=3:allf=t",
           "-t", "1", "-c:v", "ffv1", "-pix_fmt", "yuv420p", str(still))  # fmt: skip
    s = colour.analyse_clip(str(still), **kw)
    assert s.motion_fit > 0.85, s.motion_fit
    tg, tc, tx, ts = tuned(g), tuned(c), tuned(x), tuned(s)
    assert (tg.denoiser, tc.denoiser, tx.denoiser) == ("degrain", "degrain", "dfttest")
    assert ts.denoiser == "degrain" and ts.denoise_strength > 1, ts
    assert tg.denoise_strength > tc.denoise_strength
    script = render_script(preset, media_info(), tg)
    assert f"fl.denoise_degrain(clip, strength={float(tg.denoise_strength)!r})" in script
    assert "chosen by this clip's assessment" in script
    # pinned strengths still get the chosen denoiser; with no assessment, degrain
    pinned = load_preset('[restore]\nauto = false\ndenoise = "auto"\ndenoise_strength = 1.5\n')
    chaotic = {"temporal_noise": 20.0, "motion_fit": 0.95}
    assert tune(pinned, noise=0, blockiness=1, lut=False, **chaotic).denoiser == "dfttest"
    assert "fl.denoise_degrain(clip, strength=1.5)" in render_script(pinned, media_info())


def test_an_rgb_source_is_assessed_and_degrained(tmp_path: Path) -> None:
    """PNG-coded or QuickTime Animation clips are RGB: the temporal-noise measurement needs a
    matrix for their luma, and MVTools (YUV/GRAY only) works on a YUV copy."""
    import vapoursynth as vs

    from vs_scripts.runtime import filters as fl

    rgb = tmp_path / "rgb.mkv"
    graph = "crop=160:96:t*8:0,noise=alls=8:allf=t,format=gbrp"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=192x108:r=24:d=1", "-vf", graph, "-c:v", "ffv1", str(rgb)
    )
    st = colour.analyse_clip(str(rgb), matrix=1, transfer=1, primaries=1, color_range=0)
    assert st.temporal_noise > 1 and 0 < st.motion_fit < 1, (st.temporal_noise, st.motion_fit)
    clip = fl.load_source(str(rgb), fps=(24, 1))
    assert clip.format.color_family == vs.RGB
    out = fl.denoise_degrain(clip, strength=2.0)
    assert out.format.id == clip.format.id
    a, b = (np.asarray(c.get_frame(5)[1], dtype=np.float32) for c in (clip, out))
    assert 0 < float(np.abs(a - b).mean()) < 2000  # denoised, not destroyed (16-bit values)


@pytest.mark.parametrize("cut", [False, True])
def test_a_split_measuring_pass_measures_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    """The pass after the index, split over three readers of a lossy clip (each seeks to its
    part), gives the numbers one reader gives: stats, samples, noise, cuts and their times."""
    src = tmp_path / "clip.mp4"
    graph = "testsrc2=s=96x54:r=24:d=3,hue=h=120*t,noise=alls=10:allf=t"  # every frame its own
    if cut:  # a cut at 1.5 s, inside the second part: the samples are taken by seeking after
        graph += ",geq=lum='if(lt(T,1.5),lum(X,Y),255-lum(X,Y))':cb='cb(X,Y)':cr='cr(X,Y)'"
    ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-g", "20", "-pix_fmt", "yuv420p",
           str(src))  # fmt: skip
    kw = {"matrix": 1, "transfer": 1, "primaries": 1, "color_range": 1}
    one = colour.analyse_clip(str(src), index=str(tmp_path / "one"), **kw)
    monkeypatch.setattr(colour, "PASS_PART_FRAMES", 16)
    assert colour.pass_parts(72, 3) == [(0, 24), (24, 48), (48, 72)]
    split = colour.analyse_clip(str(src), index=str(tmp_path / "split"), cores=3, **kw)
    assert split.to_json() == one.to_json()
    # the parts started just after the keyframes (-g 20) instead: the same numbers again
    monkeypatch.setattr(colour, "PART_SEEK_MARGIN", 2)
    keys = [0, 20, 40, 60]
    assert colour.pass_parts(72, 3, keyframes=keys) == [(0, 22), (22, 42), (42, 72)]
    at_keys = colour.analyse_clip(
        str(src), index=str(tmp_path / "keys"), cores=3, keyframes=keys, **kw
    )
    assert at_keys.to_json() == one.to_json()
    assert (one.cut_at, one.cuts) == ((36, [1.5]) if cut else (None, []))
    assert one.temporal_noise > 0


def test_a_pass_is_split_only_into_parts_worth_a_reader() -> None:
    assert colour.pass_parts(1440, 2) == [(0, 720), (720, 1440)]
    assert colour.pass_parts(1440, 16) == [(240 * j, 240 * (j + 1)) for j in range(6)]
    assert colour.pass_parts(479, 8) == [(0, 479)]  # under 20 s at 24 fps: one reader
    assert colour.pass_parts(1440, 1) == [(0, 1440)]
    assert colour.pass_parts(0, 4) == [(0, 0)]


def test_a_pass_part_starts_after_a_keyframe_near_its_even_start() -> None:
    m = colour.PART_SEEK_MARGIN
    # a keyframe within a quarter part of the middle: the second reader starts m frames on
    assert colour.pass_parts(1440, 2, keyframes=[0, 685]) == [(0, 685 + m), (685 + m, 1440)]
    # one too far away, or only the first: the even split
    assert colour.pass_parts(1440, 2, keyframes=[0, 100]) == [(0, 720), (720, 1440)]
    assert colour.pass_parts(1440, 2, keyframes=[0]) == [(0, 720), (720, 1440)]
    # a GOP of 250: each edge to its nearest entry, in order
    three = colour.pass_parts(1440, 3, keyframes=range(0, 1440, 250))
    assert three == [(0, 500 + m), (500 + m, 1000 + m), (1000 + m, 1440)]
    # every frame a keyframe (intra-only): nothing to gain, the even split stays near
    assert colour.pass_parts(1440, 2, keyframes=range(1440)) == [(0, 720), (720, 1440)]
    # never a part shorter than a reader is worth (PASS_PART_FRAMES): the even split stays
    assert colour.pass_parts(480, 2, keyframes=[0, 180 - m]) == [(0, 240), (240, 480)]


def test_lab_a_sample_at_a_time_is_lab_of_the_whole_stack() -> None:
    """analyse_frames converts its samples one at a time (3x sooner): the very same values."""
    rng = np.random.default_rng(7)
    frames = [rng.random((18, 32, 3), dtype=np.float32) for _ in range(5)]
    whole = colour.rgb_to_lab(np.stack(frames).reshape(-1, 3))
    each = np.concatenate([colour.rgb_to_lab(f.reshape(-1, 3)) for f in frames])
    assert np.array_equal(whole, each)
