"""Pilot tests of the TUI against a real queue database seeded with jobs in every state."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.tui import FinishlineApp, PresetScreen, QueueScreen, make_app
from daemon.queue import Queue
from daemon.states import JobState
from tests.conftest import DATA

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A daemon root whose queue holds one job in each state."""
    root = tmp_path / "root"
    q = Queue(root / "queue.db")
    ids = [q.add_job(f"/hot/p/{s}.mp4", name=f"{s}.mp4", preset="small-x265",
                     content_hash=s) for s in ("queued", "running", "done", "failed", "cancelled")]  # fmt: skip
    for i, state in enumerate((None, JobState.RUNNING, JobState.DONE, JobState.FAILED,
                               JobState.CANCELLED)):  # fmt: skip
        if state is None:
            continue
        q.set_priority(ids[i], 100)  # so the claim takes this one
        assert q.claim_next("w").id == ids[i]
        q.set_priority(ids[i], 0)
        if state is not JobState.RUNNING:
            q.transition(ids[i], JobState.RUNNING, state, error="boom" if i == 3 else None)
    q.progress(ids[1], stage="encode", frame=30, total=120, fps=4.5, eta_s=20)
    q.close()
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "finishline.log").write_text(
        "2026-11-23 10:00:00,000 INFO    job=2 daemon.worker: processing running.mp4\n"
        "2026-11-23 10:00:01,000 ERROR   job=4 daemon.worker: failed.mp4: boom\n"
    )
    return root


def states(root: Path) -> dict[str, str]:
    q = Queue(root / "queue.db")
    try:
        return {j.name: str(j.state) for j in q.jobs()}
    finally:
        q.close()


async def settle(pilot, app: FinishlineApp) -> None:  # type: ignore[no-untyped-def]
    app.refresh_now()
    await pilot.pause(0.2)
    await app.workers.wait_for_complete()
    await pilot.pause(0.1)


def select_row(app: FinishlineApp, name: str) -> None:
    screen = app.screen
    assert isinstance(screen, QueueScreen)
    table = screen.query_one("#jobs")
    job = next(j for j in app.snapshot.jobs if j.name == name)
    table.move_cursor(row=table.get_row_index(str(job.id)))


async def test_table_shows_every_state_and_the_daemon_is_down(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one("#jobs")
        assert table.row_count == 5
        cells = {str(table.get_row(k)[1]): str(table.get_row(k)[4]) for k in table.rows}
        assert cells == states(seeded)
        status = str(app.screen.query_one("#status").render())
        assert "daemon NOT RUNNING" in status


async def test_actions_change_state_through_the_queue_interface(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        queued = next(n for n, s in states(seeded).items() if s == "queued")
        select_row(app, queued)
        await pilot.press("c")
        await settle(pilot, app)
        assert states(seeded)[queued] == "cancelled"
        failed = next(n for n, s in states(seeded).items() if s == "failed")
        select_row(app, failed)
        await pilot.press("t")
        await settle(pilot, app)
        assert states(seeded)[failed] == "queued"
        select_row(app, failed)
        await pilot.press("plus")
        await settle(pilot, app)
        assert next(j for j in app.snapshot.jobs if j.name == failed).priority == 1
        await pilot.press("p")
        await settle(pilot, app)
        assert Queue(seeded / "queue.db").paused
        assert "[PAUSED]" in str(app.screen.query_one("#status").render())
        await pilot.press("f")  # filter: active
        await settle(pilot, app)
        assert app.screen.query_one("#jobs").row_count == 2


async def test_job_screen_shows_error_and_log(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        failed = next(n for n, s in states(seeded).items() if s == "failed")
        select_row(app, failed)
        await pilot.press("enter")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        assert "boom" in str(app.screen.query_one("#error-text").render())
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)


@pytest.fixture
def preset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "presets"
    shutil.copytree(DATA / "presets_ok", folder)
    monkeypatch.setenv("FINISHLINE_PRESETS", str(folder))
    return folder


async def test_bad_preset_edit_shows_error_and_does_not_save(seeded: Path, preset_folder: Path) -> None:
    path = preset_folder / "small-colour.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, PresetScreen)
        screen.load("small-colour")
        editor = screen.query_one("#editor")
        editor.text = before.replace('encoder = "ffv1"', 'encoder = "ffv2"')
        await pilot.pause(0.2)
        problems = str(screen.query_one("#problems").render())
        assert "[video] encoder = 'ffv2' is not allowed" in problems
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert path.read_text() == before


async def test_good_preset_edit_saves_valid_toml_after_the_diff(seeded: Path, preset_folder: Path) -> None:
    path = preset_folder / "small-colour.toml"
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.2)
        screen = app.screen
        screen.load("small-colour")
        screen.query_one("#editor").text = path.read_text().replace("strength = 1.0", "strength = 0.7")
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert "strength" in app.screen.query_one("#diff").text
        await pilot.click("#yes")
        await pilot.pause(0.2)
    from daemon.presets import load_preset_file

    assert load_preset_file(path).colour.strength == 0.7


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_real_tui_in_tmux(seeded: Path, tmp_path: Path) -> None:
    session = f"fl{int(time.time() * 1000) % 100000}"
    exe = Path(sys.executable).parent / "finishline"
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'root = "{seeded}"\n')
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    f"TERM=xterm-256color {exe} tui --config {cfg}"], check=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout  # fmt: skip
            if "failed.mp4" in screen:
                break
            time.sleep(0.3)
        assert "failed.mp4" in screen and "daemon NOT RUNNING" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        time.sleep(1.5)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True).stdout  # fmt: skip
        assert "processing running.mp4" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
