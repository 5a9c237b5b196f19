"""Preset fuzzing: any text or bytes either loads or raises PresetError, quickly.

Documents are built from the real SCHEMA (its sections and keys) with hostile values: NaN,
infinities, huge integers, odd frame-rate strings, wrong types, nested tables and arrays,
control characters, long strings. Valid TOML is written with tomli-w; syntax errors come from
mutating that text; deep nesting and raw bytes are generated directly. A few hundred examples
per test by default; ``-m slow`` runs 1,200 each.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.engine.presets import load_preset_file
from tests.helpers import media_info
from vs_scripts.plan.errors import AppError, PresetError
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import SCHEMA, SECTIONS, Key, Preset, load_preset
from vs_scripts.plan.render import render_script

DATA = Path(__file__).resolve().parent.parent / "data"

RUNS = [
    pytest.param(300, id="default"),
    pytest.param(1200, id="slow", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
]
BASE = settings(
    deadline=2000,  # ms per example: a hang or big-number work fails the test
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STATS: Counter[str] = Counter()

# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

KEY_NAMES = sorted({k.name for k in SCHEMA})
NEAR_MISSES = ["crff", "CRF", "crf ", " fps", "", "video", "Fps", "gop-seconds", "ü", "\x00"]

NASTY_FLOATS = st.sampled_from(
    [math.nan, -math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324, 1e-300, 0.1]
)
# tomli-w writes ints with str(), which stops at 4,300 digits; bigger ones come as hex below.
HUGE_INTS = st.builds(
    lambda bits, sign: sign * 2**bits, st.integers(31, 14000), st.sampled_from([1, -1])
)
FPS_STRINGS = st.one_of(
    st.sampled_from(
        [
            "1e999999999",
            "1e-999999999",
            "-1e999999999",
            "9e9999",
            "1E+99999999999999999999",
            "1/0",
            "0/0",
            "0/1",
            "-24",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "Infinity",
            "natural",
            "source",
            "Natural",
            " 24 ",
            "24.",
            ".5",
            "1_000",
            "24/1001/3",
            "30000/1001",
            "24000 / 1001",
            "\u0662\u0664",  # Arabic-Indic digits: int() takes them
            "\u00b2\u2074",
            "1e3",
            "0x18",
            "+24",
            "",
            " ",
            "/",
            "1/",
            "/1",
            "29.97",
            "0.0000001",
            "1000",
            "1000.0001",
            "1000/1",
            "1000001/1000",
            "1/999999999",
            "9" * 5000,
            "9" * 5000 + "/1",
            "1/" + "9" * 5000,
            "1" + "0" * 400 + "/1" + "0" * 400,
            "1" * 200 + "." + "1" * 200,
        ]
    ),
    st.builds(
        lambda a, b: f"{a}/{b}", st.integers(-(10**12), 10**30), st.integers(-(10**12), 10**30)
    ),
    st.builds(lambda a, e: f"{a}e{e}", st.integers(-9, 99), st.integers(-(10**12), 10**12)),
    st.decimals().map(str),
    st.fractions().map(str),
    st.text(alphabet="0123456789./eE+-_ ", max_size=40),
)
CONTROL_TEXT = st.text(
    alphabet=st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\u2028\ufeff\u202e\ufffd"),
    max_size=12,
)
CHOICE_LIKE = st.sampled_from(sorted({c for k in SCHEMA for c in k.choices})).flatmap(
    lambda c: st.sampled_from([c, c.upper(), c + " ", c[:-1], c + "x"])
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(),
    NASTY_FLOATS,
    st.text(max_size=30),
    CONTROL_TEXT,
    st.integers(1000, 100_000).map(lambda n: "x" * n),
    FPS_STRINGS,
    CHOICE_LIKE,
    st.datetimes(),
    st.dates(),
    st.times(),
)
TABLE_KEYS = st.sampled_from(KEY_NAMES + NEAR_MISSES) | st.text(max_size=12)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TABLE_KEYS, inner, max_size=4),
    max_leaves=12,
)


def good_value(key: Key) -> st.SearchStrategy[object]:
    """Values that pass this key's own check (the cross-checks may still refuse them)."""
    if key.choices:
        return st.sampled_from(key.choices)
    if key.kind == "bool":
        return st.booleans()
    if key.kind == "str":
        return st.text(max_size=40)
    if key.kind == "fps":
        return st.one_of(
            st.sampled_from([0, 12, 24, 25, 30, 60, 120, 1000, 29.97, 23.976, "30000/1001"]),
            st.sampled_from(["natural", "source", "24000/1001", "25", "59.94"]),
            st.floats(1, 1000),
            st.fractions(min_value=1, max_value=1000, max_denominator=1001).map(str),
        )
    assert key.lo is not None and key.hi is not None
    if key.kind == "int":
        return st.integers(int(key.lo), int(key.hi))
    return st.floats(key.lo, key.hi)


def section_table(section: str) -> st.SearchStrategy[dict[str, object]]:
    keys = [k for k in SCHEMA if k.section == section]
    entries = [st.tuples(st.just(k.name), good_value(k)) for k in keys]
    return st.lists(st.one_of(entries), max_size=8).map(dict)


NASTY_NUMBERS = st.one_of(NASTY_FLOATS, HUGE_INTS, FPS_STRINGS, st.floats(), st.integers())


@st.composite
def documents(draw: st.DrawFn, *, hostile: bool) -> dict[str, object]:
    """A document of valid values; hostile ones then get one to four bad entries spliced in
    (mostly a known key with a nasty number, so that one bad value is often the only one)."""
    doc: dict[str, object] = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=len(SECTIONS))):
        doc[section] = draw(section_table(section))
    if not hostile:
        return doc
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["number", "number", "number", "value", "key", "section"]))
        key = draw(st.sampled_from(SCHEMA))
        if how == "section":  # a section that is no table, or an unknown one
            doc[draw(st.sampled_from(SECTIONS) | TABLE_KEYS)] = draw(VALUES)
            continue
        table = doc.get(key.section)
        if not isinstance(table, dict):
            table = doc[key.section] = {}
        name = draw(TABLE_KEYS) if how == "key" else key.name
        table[name] = draw(NASTY_NUMBERS if how == "number" else VALUES)
    return doc


def dumps(doc: dict[str, object]) -> str:
    # Top-level scalars must come before the tables for the text to mean the same dict.
    return tomli_w.dumps(doc)


TOML_CHARS = st.sampled_from(list("[]{}\"'=.,#\n\\ \t0123456789eE+-_:/xnaift")) | st.characters()


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """Valid TOML with a few characters inserted, deleted, replaced or lines repeated."""
    text = dumps(draw(documents(hostile=draw(st.booleans()))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "repeat"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.text(TOML_CHARS, min_size=1, max_size=6)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        elif op == "replace" and at < len(text):
            text = text[:at] + draw(TOML_CHARS) + text[at + 1 :]
        elif op == "truncate":
            text = text[:at]
        elif op == "repeat":
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i] * draw(st.integers(1, 3)))
                text = "".join(lines)
    return text


def deep_text(depth: int, kind: str, key: str) -> str:
    """Nesting tomllib recurses on (arrays, inline tables) or builds deep dicts from (dots)."""
    section, name = key.split(" ")
    head = f"[{section}]\n"
    if kind == "array":
        return f"{head}{name} = {'[' * depth}1{']' * depth}\n"
    if kind == "inline":
        return f"{head}{name} = {'{a = ' * depth}1{'}' * depth}\n"
    if kind == "dotted":
        return f"{head}{name}{'.a' * depth} = 1\n"
    if kind == "header":
        return f"[{section}{'.a' * depth}]\n{name} = 1\n"
    if kind == "array-of-tables":
        return f"[[{section}{'.a' * depth}]]\n"
    return "[" * depth  # unclosed


DEEP = st.builds(
    deep_text,
    st.integers(1, 3000) | st.sampled_from([333, 500, 1000, 2000]),
    st.sampled_from(["array", "inline", "dotted", "header", "array-of-tables", "unclosed"]),
    st.sampled_from(["motion fps", "video crf", "audio loudness_lufs", "nosuch x"]),
)
HUGE_LITERALS = st.builds(
    lambda key, lit: f"[{key.split(' ')[0]}]\n{key.split(' ')[1]} = {lit}\n",
    st.sampled_from(
        ["motion fps", "video crf", "frame width", "audio loudness_lufs", "qc min_fps"]
    ),
    st.sampled_from(
        [
            "9" * 5000,
            "0x" + "f" * 5000,
            "0o" + "7" * 5000,
            "0b" + "1" * 20000,
            "-" + "9" * 4299,
            "1e999999999",
            "-1e999999999",
            "nan",
            "+inf",
            "-inf",
            '"1e999999999"',
            '"' + "9" * 4299 + '/1"',
        ]
    ),
)
RAW_TEXT = st.one_of(
    mutated_text(), DEEP, HUGE_LITERALS, st.text(max_size=200), st.text(TOML_CHARS, max_size=200)
)


@st.composite
def raw_bytes(draw: st.DrawFn) -> bytes:
    """A preset file's bytes: valid UTF-8 TOML with bad bytes spliced in, or noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = dumps(draw(documents(hostile=False))).encode()
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00", b"\x80"])
            | st.binary(min_size=1, max_size=4)
        )
        data = data[:at] + bad + data[at:]
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a byte-order mark, as Notepad writes
    return data


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


media = media_info


MEDIA = (
    media(),
    media(fps=Fraction(30000, 1001), vfr=True, width=1920, height=1080, audio=()),
    media(width=360, height=640, fps=Fraction(25), duration=0.04, frame_count=1),
)


def load_or_refuse(text: str) -> Preset | None:
    """The contract: a Preset, or a PresetError that names the source."""
    try:
        preset = load_preset(text, source="fuzz.toml")
    except PresetError as exc:
        assert exc.problems, "a PresetError lists its problems"
        assert all(p.startswith("fuzz.toml") for p in exc.problems), exc.problems
        STATS["refused"] += 1
        return None
    STATS["loaded"] += 1
    assert_within_schema(preset)
    return preset


def assert_within_schema(preset: Preset) -> None:
    """What loads is what SCHEMA allows: no NaN, no infinity, nothing out of range."""
    for key in SCHEMA:
        value = getattr(getattr(preset, key.section), key.name)
        where = f"[{key.section}] {key.name} = {value!r}"
        if value is None:
            assert key.optional, where
        elif key.kind == "fps":
            assert value == "natural" or (
                isinstance(value, Fraction) and (value == 0 or 1 <= value <= 1000)
            ), where
        elif key.kind == "bool":
            assert isinstance(value, bool), where
        elif key.kind == "str":
            assert isinstance(value, str) and (not key.choices or value in key.choices), where
        else:
            kind = int if key.kind == "int" else float
            assert type(value) is kind and math.isfinite(value), where
            assert key.lo is not None and key.hi is not None
            assert key.lo <= value <= key.hi, where


@pytest.mark.parametrize("examples", RUNS)
def test_fuzzed_documents_load_or_raise_preset_error(examples: int) -> None:
    @settings(BASE, max_examples=examples)
    @given(documents(hostile=True))
    def run(doc: dict[str, object]) -> None:
        load_or_refuse(dumps(doc))

    run()


@pytest.mark.parametrize("examples", RUNS)
def test_mutated_deep_and_raw_text_load_or_raise_preset_error(examples: int) -> None:
    @settings(BASE, max_examples=examples)
    @given(RAW_TEXT)
    def run(text: str) -> None:
        load_or_refuse(text)

    run()


@pytest.mark.parametrize("examples", RUNS)
def test_fuzzed_files_load_or_raise_app_error(examples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"

        @settings(BASE, max_examples=examples)
        @given(raw_bytes())
        def run(data: bytes) -> None:
            path.write_bytes(data)
            try:
                load_preset_file(path)
            except AppError as exc:  # PresetError is one
                assert str(path) in str(exc)
                STATS["refused"] += 1
            else:
                STATS["loaded"] += 1

        run()


@pytest.mark.parametrize("examples", RUNS)
def test_every_valid_fuzzed_preset_renders(examples: int) -> None:
    @settings(BASE, max_examples=examples)
    @given(documents(hostile=False), st.sampled_from(MEDIA))
    def run(doc: dict[str, object], clip: MediaInfo) -> None:
        preset = load_or_refuse(dumps(doc))
        if preset is not None:
            compile(render_script(preset, clip), "fuzz.vpy", "exec")

    run()


# ---------------------------------------------------------------------------------------------
# Regressions from issue 13 that are easier to generate than to commit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "inline", "dotted", "header", "array-of-tables"])
@pytest.mark.parametrize("depth", [500, 5000])
def test_deep_nesting_is_a_preset_error(kind: str, depth: int) -> None:
    with pytest.raises(PresetError) as info:
        load_preset(deep_text(depth, kind, "video crf"), source="deep.toml")
    assert "deep.toml" in str(info.value)


def test_deep_nesting_names_the_limit() -> None:
    with pytest.raises(PresetError, match="nested too deeply"):
        load_preset(deep_text(500, "array", "video crf"), source="deep.toml")


def test_non_utf8_file_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[preset]\ndescription = "café"\n'.encode("latin-1"))
    with pytest.raises(AppError, match="is not UTF-8 text") as info:
        load_preset_file(path)
    assert str(path) in str(info.value)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[preset]\ndescription = "from Notepad"\n')
    assert load_preset_file(path).preset.description == "from Notepad"


def test_unreadable_file_is_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(AppError, match="cannot read preset") as info:
        load_preset_file(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[motion]\nfps = " + "9" * 5000 + "\n",
        "[frame]\nwidth = 0x" + "f" * 5000 + "\n",
        "[video]\ncrf = 0x" + "f" * 5000 + "\n",
        '[motion]\nfps = "' + "9" * 4000 + '"\n',
        '[motion]\nfps = "1/' + "9" * 4000 + '"\n',
        '[motion]\nfps = "1E+99999999999999999999"\n',
        "[motion]\nfps = -inf\n",
        "[motion]\nfps = nan\n",
        "[qc]\nmin_fps = nan\n",
        "[audio]\ntrue_peak_db = -inf\n",
    ],
    ids=lambda t: t[:24],
)
def test_hostile_numbers_are_refused(text: str) -> None:
    with pytest.raises(PresetError) as info:
        load_preset(text, source="num.toml")
    assert "num.toml" in str(info.value)
    assert len(str(info.value)) < 1000  # a huge value is abbreviated, not echoed


def test_presets_list_survives_broken_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    (tmp_path / "good.toml").write_text('[preset]\ndescription = "fine"\n')
    (tmp_path / "latin1.toml").write_bytes(b'[preset]\ndescription = "caf\xe9"\n')
    (tmp_path / "deep.toml").write_text(deep_text(500, "array", "video crf"))
    (tmp_path / "nan.toml").write_text("[video]\ngop_seconds = nan\n")
    (tmp_path / "dir.toml").mkdir()
    monkeypatch.setenv("FINISHLINE_PRESETS", str(tmp_path))
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "fine" in out
    for name in ("latin1", "deep", "nan", "dir"):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "invalid" in line, line
    assert main(["presets", "check"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for name in ("latin1", "deep", "nan", "dir"):
        assert f"{tmp_path / name}.toml" in captured.err
    assert f"ok      {tmp_path / 'good.toml'}" in captured.out


@pytest.fixture(scope="module", autouse=True)
def _report() -> object:
    yield
    if STATS and os.environ.get("FUZZ_REPORT"):
        print(f"\npreset fuzz: {dict(STATS)}")
