"""A clip's audio is made while its batch is assessed (cores BestSource's indexing leaves idle),
and taken by the clip's run only when it is for the duration the run checked."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from daemon.core.errors import EncodeError
from daemon.engine.finish import Engine
from daemon.engine.pipeline import AheadAudio, AudioJob, Cancelled, Children, Pipeline
from daemon.engine.presets import find_preset
from tests.conftest import make_clip
from tests.helpers import loudness, streams, wait_for


def audio_files(work: Path) -> list[str]:
    return sorted(p.name for p in work.rglob("audio.*"))


def test_audio_made_while_the_batch_is_assessed_is_delivered(
    tmp_path: Path, test_presets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="daemon.engine.pipeline")
    src = make_clip(tmp_path / "clip.mp4", seconds=2.0)
    engine = Engine(find_preset("small-x265"), work_root=tmp_path / "work")
    assert engine.needs_assessment  # restore.auto: the audio has the assessment to overlap
    try:
        plans = engine.assess({"a": src}, tmp_path / "work" / "batch", ahead=[src]).plans
        result = engine.finish(src, tmp_path / "out.mp4", plan=plans["a"])
    finally:
        engine.close()
    assert any("audio made while the batch was assessed" in r.getMessage() for r in caplog.records)
    s = streams(result.output)
    assert float(s["audio"]["duration"]) == pytest.approx(float(s["video"]["duration"]), abs=0.05)
    assert loudness(result.output) == pytest.approx(-14.0, abs=1.5)  # the preset's target
    assert "audio" in {t.stage for t in result.timings}
    assert audio_files(tmp_path / "work") == []


def test_audio_made_for_another_duration_is_made_again(
    tmp_path: Path, test_presets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="daemon.engine.pipeline")
    src = make_clip(tmp_path / "clip.mp4", seconds=2.0)
    stale = tmp_path / "work" / "audio.1.1.mov"
    stale.parent.mkdir()
    stale.write_bytes(b"not this clip's audio")
    made: Future[AheadAudio] = Future()
    made.set_running_or_notify_cancel()
    made.set_result(AheadAudio(("another", "duration"), stale, 1.0))
    job = AudioJob(made, Children())
    pipe = Pipeline(find_preset("small-x265"), work_root=tmp_path / "work", audio=job)
    result = pipe.run(src, tmp_path / "out.mp4")
    assert any("for another duration" in r.getMessage() for r in caplog.records)
    assert not stale.exists()
    s = streams(result.output)
    assert float(s["audio"]["duration"]) == pytest.approx(2.0, abs=0.05)


def test_audio_no_clip_took_is_dropped(tmp_path: Path, test_presets: Path) -> None:
    """Made ahead for a clip the engine never finished (its run failed first, or the batch was
    interrupted): closing the engine deletes it."""
    src = make_clip(tmp_path / "clip.mp4", seconds=1.0)
    engine = Engine(find_preset("small-x265"), work_root=tmp_path / "work")
    engine.assess({"a": src}, tmp_path / "work" / "batch", ahead=[src])
    ready = engine._ahead[src.absolute()].future.result(timeout=60)
    assert ready.path is not None and ready.path.is_file()
    engine.close()
    assert audio_files(tmp_path / "work") == []


def test_closing_the_engine_kills_the_audio_being_made(tmp_path: Path, test_presets: Path) -> None:
    """A job cancelled (or a process stopped) while its audio is made ahead does not wait for
    that ffmpeg to end on its own: it is killed, and nothing is left behind."""
    src = make_clip(tmp_path / "long.mp4", seconds=300.0, size="64x36")
    engine = Engine(find_preset("small-x265"), work_root=tmp_path / "work")
    engine.assess({"a": src}, tmp_path / "work" / "batch", ahead=[src])
    job = engine._ahead[src.absolute()]
    wait_for(lambda: job.maker._procs, 60, "the audio's ffmpeg to start")
    engine.close()
    assert isinstance(job.future.exception(timeout=60), (Cancelled, EncodeError))
    assert audio_files(tmp_path / "work") == []
