"""Preset loading, validation (a folder of broken presets) and writing."""

from __future__ import annotations

from fractions import Fraction
from fractions import Fraction as F
from pathlib import Path

import pytest
import tomli_w

from daemon.engine.presets import (
    builtin_dir,
    find_preset,
    list_presets,
    load_preset_file,
    save_preset,
)
from vs_scripts.plan.errors import AppError, PresetError
from vs_scripts.plan.preset import (
    SCHEMA,
    Preset,
    load_preset,
    natural_fps,
    parse_fps,
    preset_to_dict,
)

DATA = Path(__file__).resolve().parent.parent / "data"
BAD = sorted((DATA / "presets_bad").glob("bad_*.toml"))


@pytest.mark.parametrize("path", sorted(builtin_dir().glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_preset_loads(path: Path) -> None:
    preset = load_preset_file(path)
    assert preset.name == path.stem
    assert preset.preset.description


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_broken_presets_name_file_key_and_fix(path: Path) -> None:
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ").split(" | ")
    with pytest.raises(PresetError) as info:
        load_preset(text, source=str(path))
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_all_problems_are_collected_not_just_the_first() -> None:
    with pytest.raises(PresetError) as info:
        load_preset('[video]\ncrf = 99\nspeed = "warp"\n[audio]\nchannels = 0\n', source="x.toml")
    assert len(info.value.problems) == 3


def test_defaults_and_types() -> None:
    p = load_preset("", source="empty.toml")
    assert isinstance(p, Preset)
    assert p.name == "empty"
    assert p.motion.fps == Fraction(0)
    assert p.video.encoder == "x265"
    with pytest.raises(AttributeError):
        p.video.crf = 3  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (24, Fraction(24)),
        (29.97, Fraction(30000, 1001)),
        ("24000/1001", Fraction(24000, 1001)),
        (23.976, Fraction(24000, 1001)),
        ("25", Fraction(25)),
        (0, Fraction(0)),
        (-1, None),
        ("x", None),
        (True, None),
        ("1/0", None),
    ],
)
def test_parse_fps(value: object, expected: Fraction | None) -> None:
    assert parse_fps(value) == expected


def test_round_trip_through_tomli_w(tmp_path: Path) -> None:
    original = find_preset("youtube-1080p")
    target = tmp_path / "copy.toml"
    save_preset(original, target)
    again = load_preset_file(target)
    assert preset_to_dict(again) == preset_to_dict(original)
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_save_refuses_bad_names(tmp_path: Path) -> None:
    with pytest.raises(AppError):
        save_preset(find_preset("youtube-1080p"), tmp_path / "Bad Name!.toml")


def test_unknown_preset_suggests_nearest() -> None:
    with pytest.raises(AppError, match="Did you mean 'youtube-1080p'"):
        find_preset("youtube-1080")


def test_user_presets_shadow_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "youtube-1080p.toml").write_text('[preset]\ndescription = "mine"\n')
    monkeypatch.setenv("FINISHLINE_PRESETS", str(tmp_path))
    assert list_presets()["youtube-1080p"].parent == tmp_path
    assert find_preset("youtube-1080p").preset.description == "mine"


def test_schema_documents_every_key() -> None:
    for key in SCHEMA:
        assert key.doc and key.section and key.name


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        (F(12), F(24)),
        (F(8), F(24)),
        (F(15), F(30)),
        (F(10), F(30)),
        (F(25, 2), F(25)),
        (F(16), F(24)),
        (F(24), F(24)),
        (F(25), F(25)),
        (F(30000, 1001), F(30000, 1001)),
        (F(24000, 1001), F(24000, 1001)),
        (F(60), F(60)),
    ],
)
def test_natural_fps(src: F, expected: F) -> None:
    assert natural_fps(src) == expected


def test_fps_keywords() -> None:
    assert load_preset('[motion]\nfps = "natural"\n').motion.fps == "natural"
    assert load_preset('[motion]\nfps = "source"\n').motion.fps == Fraction(0)
    text = tomli_w.dumps(preset_to_dict(load_preset('[motion]\nfps = "natural"\n')))
    assert load_preset(text).motion.fps == "natural"
