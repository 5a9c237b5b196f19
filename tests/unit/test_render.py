"""Script rendering: golden text, determinism, nothing from paths or preset strings in code."""

from __future__ import annotations

import ast
import os
from fractions import Fraction
from pathlib import Path

import pytest

from daemon.engine.presets import builtin_dir, load_preset_file
from tests.helpers import media_info
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import load_preset
from vs_scripts.plan.render import plan_script, render_script

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
HOSTILE = '/tmp/it\'s a "clip" $(rm -rf ~); é.mp4'


def media(**kw: object) -> MediaInfo:
    return media_info(**{"path": HOSTILE, **kw})


@pytest.mark.parametrize("path", sorted(builtin_dir().glob("*.toml")), ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    text = render_script(load_preset_file(path), media())
    golden = GOLDEN / f"{path.stem}.vpy"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"re-render with UPDATE_GOLDEN=1 after reviewing {golden}"


def test_deterministic_and_valid_python() -> None:
    preset = load_preset_file(builtin_dir() / "youtube-1080p.toml")
    a, b = render_script(preset, media()), render_script(preset, media())
    assert a == b
    ast.parse(a)


def test_no_path_or_preset_string_in_the_code() -> None:
    preset = load_preset(
        '[preset]\ndescription = "x\\"); import os; os.system(\\"id"\n', source="evil.toml"
    )
    text = render_script(preset, media())
    tree = ast.parse(text)
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert strings <= {"src", "cache", "", "rife_model", "upscale_model", "lut"}, strings
    assert HOSTILE not in text and "os.system" not in text


def test_plan_for_vfr_and_rate_change() -> None:
    preset = load_preset("[motion]\nfps = 24\n[frame]\nwidth = 1920\nheight = 1080\n")
    plan = plan_script(preset, media(vfr=True, duration=2.0, frame_count=30))
    assert (plan.width, plan.height, plan.fps, plan.frame_count) == (1920, 1080, Fraction(24), 48)
    assert any("variable frame rate" in n for n in plan.notes)


def test_untagged_sd_is_bt601_and_hd_is_bt709() -> None:
    preset = load_preset("")
    assert plan_script(preset, media()).source_colour.matrix == 6
    assert plan_script(preset, media(width=1280, height=720)).source_colour.matrix == 1
    tagged = plan_script(preset, media(matrix="bt709", color_range="pc"))
    assert tagged.source_colour.matrix == 1 and tagged.source_colour.range == 0


def test_source_size_kept_even_and_rotation_swaps() -> None:
    preset = load_preset("")
    plan = plan_script(preset, media(width=641, height=361))
    assert (plan.width, plan.height) == (640, 360)
    plan = plan_script(preset, media(rotation=90))
    assert (plan.width, plan.height) == (360, 640)


def test_tensorrt_engine_cache_arrives_as_an_argument() -> None:
    preset = load_preset('[upscale]\nmodel = "realesr-animevideov3"\n[ai]\ntensorrt = true\n')
    text = render_script(preset, media())
    assert "engine_cache = fl.script_arg(globals(), 'engine_cache', default='')" in text
    assert "tensorrt=True, engine_cache=engine_cache)" in text
    ast.parse(text)
    plain = render_script(load_preset('[upscale]\nmodel = "realesr-animevideov3"\n'), media())
    assert "engine_cache" not in plain and "tensorrt" not in plain


def test_saliency_crop_focus_is_a_typed_number() -> None:
    from vs_scripts.plan.render import Tuning, crop_focus

    preset = load_preset('[frame]\nwidth = 1080\nheight = 1920\nfit = "saliency"\n')
    text = render_script(preset, media(), Tuning(focus=0.8125))
    assert "fit=fl.Fit.CROP, kernel=fl.Kernel.SPLINE36, focus=0.8125)" in text
    flat = [1.0] * 32
    right = [0.1] * 24 + [2.0] * 8
    assert crop_focus(flat, 0.316) == 0.5  # nothing stands out: a steady centre crop
    assert crop_focus(right, 0.316) == 1.0  # the subject at the right edge


def test_the_stabiliser_runs_where_the_frame_is_smaller() -> None:
    """x4 of a 720p source is 5120x2880: the 4K delivery is stabilised after the fit; x4 of
    640x360 is smaller than 4K, so it is stabilised before."""
    preset = load_preset_file(builtin_dir() / "youtube-4k.toml")
    for size, after in (((1280, 720), True), ((640, 360), False)):
        lines = render_script(preset, media(width=size[0], height=size[1])).splitlines()
        fit = next(i for i, x in enumerate(lines) if x.startswith("clip = fl.fit_frame("))
        stab = next(i for i, x in enumerate(lines) if x.startswith("clip = fl.stabilise("))
        assert (stab > fit) is after, (size, lines[fit - 2 : fit + 3])
