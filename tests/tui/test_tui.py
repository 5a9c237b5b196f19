"""Pilot tests of the TUI against a real queue database seeded with jobs in every state."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Checkbox, DataTable, Input, Select, Static, TextArea
from textual_image.widget import get_cell_size

from app.format import tilde
from app.tui import (
    ConfirmDiscard,
    FinishlineApp,
    LogScreen,
    NameDialog,
    PresetScreen,
    QueueScreen,
    make_app,
)
from daemon.runtime.queue import Queue
from daemon.runtime.states import JobState
from tests.conftest import DATA
from tests.helpers import digest
from vs_scripts.plan.errors import PresetError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A daemon root whose queue holds one job in each state."""
    root = tmp_path / "root"
    q = Queue(root / "queue.db")
    ids = [
        q.add_job(f"/hot/p/{s}.mp4", name=f"{s}.mp4", preset="small-x265", content_hash=s)
        for s in ("queued", "running", "done", "failed", "cancelled")
    ]
    for i, state in enumerate(
        (None, JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLED)
    ):
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
        "2026-11-23 10:00:00,000 INFO    job=2 daemon.runtime.worker: processing running.mp4\n"
        "2026-11-23 10:00:01,000 ERROR   job=4 daemon.runtime.worker: failed.mp4: boom\n"
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


def burst(app: FinishlineApp, *keys: str) -> None:
    """Queue key presses the way a paste or a laggy SSH link delivers them: all at once, with
    no waiting for the app to handle one before the next arrives (``pilot.press`` waits)."""
    for key in keys:
        char = key if len(key) == 1 else {"full_stop": ".", "plus": "+", "space": " "}.get(key)
        event = events.Key(key, char)
        event.set_sender(app)  # as the driver does: an event without one reaches no widget
        app.post_message(event)


def screen_text(app: FinishlineApp) -> list[str]:
    """The screen as the terminal shows it, one string per line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


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
        cells = {table.get_cell(k, "clip"): table.get_cell(k, "state") for k in table.rows}
        assert cells == states(seeded)
        status = str(app.screen.query_one("#status").render())
        assert "daemon NOT RUNNING" in status


async def test_at_80x24_the_columns_that_matter_are_on_screen(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one("#jobs", DataTable)
        visible = table.scrollable_content_region.width
        widths = {
            c.key.value: c.get_render_width(table) for c in table.ordered_columns if c.key.value
        }
        keys = list(widths)
        needed = ("clip", "state", "progress", "fps", "eta", "priority")
        assert sum(widths[k] for k in keys[: max(keys.index(k) for k in needed) + 1]) <= visible
        row = next(line for line in screen_text(app) if "running.mp4" in line)
        for cell in ("running", "25%", "4.5", "0:20"):
            assert cell in row, row


async def test_refresh_updates_rows_in_place_keeping_cursor_and_scroll(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one("#jobs", DataTable)
        select_row(app, "queued.mp4")
        table.scroll_to(x=30, animate=False)
        await pilot.pause(0.1)
        assert table.scroll_x == 30
        q = Queue(seeded / "queue.db")
        running = next(j for j in q.jobs() if j.name == "running.mp4")
        q.progress(running.id, stage="encode", frame=90, total=120, fps=6.0, eta_s=5)
        new = q.add_job("/hot/p/new.mp4", name="new.mp4", preset="small-x265", content_hash="n")
        q.close()
        await settle(pilot, app)
        assert table.row_count == 6 and str(new) in table.rows  # the new job is listed
        assert table.get_cell(str(running.id), "progress").endswith("75%")
        assert table.get_cell(str(running.id), "fps") == "6.0"
        assert app.screen.selected_id() == next(
            j.id for j in app.snapshot.jobs if j.name == "queued.mp4"
        )
        assert table.scroll_x == 30
        assert table.ordered_rows[0].key.value == str(new)  # sorted: newest first
        await pilot.press("f")  # active only: rows leave, the cursor stays on its job
        await settle(pilot, app)
        assert table.row_count == 3
        assert table.get_row_at(table.cursor_row)[1] == "queued.mp4"


@pytest.mark.parametrize("width", [80, 120])
async def test_every_key_is_in_the_footer_or_the_help_line(seeded: Path, width: int) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(width, 24)) as pilot:
        await settle(pilot, app)
        footer, help_line = screen_text(app)[-1], " ".join(screen_text(app)[-3:-1])
        assert len(footer.rstrip()) <= width
        for shown in ("p pause", "c cancel", "t retry", "u requeue", "+-", "prio"):
            assert shown in footer, footer
        for shown in ("f filter", "s sort", "q quit"):
            assert shown in footer, footer
        for shown in ("↵ details", "o output", "1 queue", "2 logs", "3 presets"):
            assert shown in help_line, help_line


async def test_quick_priority_presses_each_count(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        select_row(app, "queued.mp4")
        burst(app, "plus", "plus", "plus")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await settle(pilot, app)
        job = next(j for j in app.snapshot.jobs if j.name == "queued.mp4")
        assert job.priority == 3
        table = app.screen.query_one("#jobs", DataTable)
        assert table.get_cell(str(job.id), "priority") == "3"
        burst(app, "minus")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await settle(pilot, app)
        assert table.get_cell(str(job.id), "priority") == "2"


async def test_actions_change_state_through_the_queue_interface(seeded: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        queued = next(n for n, s in states(seeded).items() if s == "queued")
        select_row(app, queued)
        await pilot.press("c")  # asks first; escape keeps the job
        await pilot.pause(0.2)
        shown = " ".join(line.strip() for line in screen_text(app))
        assert "(retry brings it back)" in shown, shown  # the question wraps, whole
        await pilot.press("escape")
        await settle(pilot, app)
        assert states(seeded)[queued] == "queued"
        await pilot.press("c")
        await pilot.pause(0.2)
        await pilot.click("#cancel")
        await settle(pilot, app)
        assert states(seeded)[queued] == "cancelled"
        failed = next(n for n, s in states(seeded).items() if s == "failed")
        src = seeded / failed  # a retry needs the source to still be there
        src.touch()
        with contextlib.closing(sqlite3.connect(seeded / "queue.db")) as db, db:
            db.execute("UPDATE jobs SET src=? WHERE name=?", (str(src), failed))
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
        select_row(app, failed)  # queued again: its screen says what it waits for
        await pilot.press("enter")
        await loaded(pilot, app)
        assert "waiting: the queue is paused" in str(app.screen.query_one("#facts-text").render())
        await pilot.press("escape")
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


async def test_who_runs_a_job_and_its_chunks_is_shown_and_kept_current(seeded: Path) -> None:
    """The queue table's worker column, and on the job's screen its worker and device and a
    line on its chunks: how many are done and which workers (a helper too) run the others;
    that line follows the chunks while the screen stays open."""
    from daemon.engine.chunks import ChunkStore, ChunkTask

    q = Queue(seeded / "queue.db")
    running = next(j for j in q.jobs() if j.name == "running.mp4")
    q.set_worker_device(running.id, "w", "cuda:0 (8 threads)")
    q.set_worker_device(None, "vm:7:w1", "cuda:1 (8 threads)")
    q.close()
    store = ChunkStore(seeded / "queue.db")
    job = f"job-{running.id}"
    store.plan(job, "k", [ChunkTask(i, 40 * i, 40 * i + 40, [], [], "", "") for i in range(3)])
    own = store.claim("w@host", job=job)
    helped = store.claim("vm:7:w1", job=job)
    assert own is not None and helped is not None
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    try:
        async with app.run_test(size=(140, 30)) as pilot:
            await settle(pilot, app)
            table = app.screen.query_one("#jobs", DataTable)
            assert table.get_cell(str(running.id), "worker") == "w cuda:0"
            assert table.get_cell(str(running.id - 1), "worker") == ""  # the queued one
            select_row(app, "running.mp4")
            await pilot.press("enter")
            await loaded(pilot, app)
            facts = str(app.screen.query_one("#facts-text").render())
            assert "on w cuda:0 (8 threads)" in facts, facts
            assert (
                "chunks: 0 of 3 done; running on w cuda:0 (8 threads), w1 cuda:1 (8 threads)"
                in facts
            ), facts
            store.done(own)
            await pilot.pause(1.5)  # the screen follows the job once a second
            await app.workers.wait_for_complete()
            facts = str(app.screen.query_one("#facts-text").render())
            assert "chunks: 1 of 3 done; running on w1 cuda:1 (8 threads)" in facts, facts
    finally:
        store.close()


@pytest.fixture
def preset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "presets"
    shutil.copytree(DATA / "presets_ok", folder)
    monkeypatch.setenv("FINISHLINE_PRESETS", str(folder))
    return folder


async def open_preset(pilot, app: FinishlineApp, name: str) -> PresetScreen:  # type: ignore[no-untyped-def]
    """The presets screen showing ``name`` (read by its worker)."""
    await pilot.press("3")
    await loaded(pilot, app)
    screen = app.screen
    assert isinstance(screen, PresetScreen)
    screen.load(name)
    await loaded(pilot, app)
    assert screen.current is not None and screen.current.stem == name
    return screen


async def loaded(pilot, app: FinishlineApp) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(0.2)
    await app.workers.wait_for_complete()
    await pilot.pause(0.2)


def editor_of(screen: PresetScreen) -> TextArea:
    return screen.query_one("#editor", TextArea)


async def test_bad_preset_edit_shows_error_and_does_not_save(
    seeded: Path, preset_folder: Path
) -> None:
    path = preset_folder / "small-colour.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_preset(pilot, app, "small-colour")
        editor_of(screen).text = before.replace('encoder = "ffv1"', 'encoder = "ffv2"')
        await pilot.pause(0.2)
        problems = str(screen.query_one("#problems").render())
        assert "[video] encoder = 'ffv2' is not allowed" in problems
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert path.read_text() == before


async def test_good_preset_edit_saves_exactly_the_text_of_the_diff(
    seeded: Path, preset_folder: Path
) -> None:
    path = preset_folder / "small-colour.toml"
    before = path.read_text()
    edited = before.replace("strength = 1.0", "strength = 0.7")
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_preset(pilot, app, "small-colour")
        editor_of(screen).text = edited
        await pilot.pause(0.1)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert "strength" in app.screen.query_one("#diff").text
        await pilot.click("#yes")
        await pilot.pause(0.2)
        assert not screen.modified
    assert path.read_text() == edited  # comments, order and spacing as they were


async def test_form_shows_a_bad_value_under_its_key_and_does_not_save(
    seeded: Path, preset_folder: Path
) -> None:
    path = preset_folder / "small-x265.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        crf = screen.query_one("#f-video-crf", Input)
        assert crf.value == "28.0"  # the form shows the file's value
        crf.focus()
        crf.value = "99"
        await pilot.pause(0.3)
        error = str(screen.query_one("#e-video-crf", Static).render())
        assert "[video] crf = 99 is not allowed; use a number >= 0 and <= 51" in error
        assert editor_of(screen).text == before.replace("crf = 28.0", "crf = 99")
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert path.read_text() == before


async def test_form_edit_saves_the_file_changed_only_where_the_diff_says(
    seeded: Path, preset_folder: Path
) -> None:
    """The saved file keeps its comments and key order and gains no default keys: it differs
    from the original exactly as the diff shown before saving."""
    path = preset_folder / "small-x265.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        screen.query_one("#f-video-speed", Select).value = "slow"
        screen.query_one("#f-colour-stabilise", Checkbox).value = False
        crf = screen.query_one("#f-video-crf", Input)
        crf.focus()
        await pilot.press("end", "backspace", "backspace", "backspace", "backspace")
        await pilot.press("2", "1", "full_stop", "5")
        await pilot.pause(0.3)
        assert not screen.query_one("#e-video-speed", Static).display
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        diff = app.screen.query_one("#diff").text
        await pilot.click("#yes")
        await pilot.pause(0.2)
    expected = (
        before.replace('speed = "ultrafast"', 'speed = "slow"').replace("crf = 28.0", "crf = 21.5")
        + "\n[colour]\nstabilise = false\n"
    )
    assert path.read_text() == expected
    changed = [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        '-speed = "ultrafast"',
        "-crf = 28.0",
        '+speed = "slow"',
        "+crf = 21.5",
        "+",
        "+[colour]",
        "+stabilise = false",
    ]
    from daemon.engine.presets import load_preset_file

    saved = load_preset_file(path)
    assert (saved.video.speed, saved.colour.stabilise, saved.video.crf) == ("slow", False, 21.5)


def test_save_preset_text_writes_the_text_as_it_is_or_nothing(tmp_path: Path) -> None:
    from daemon.engine.presets import save_preset_text
    from vs_scripts.plan.errors import AppError

    text = (DATA / "presets_ok" / "small-x265.toml").read_text()
    target = tmp_path / "mine.toml"
    preset = save_preset_text(text, target)
    assert target.read_text() == text and preset.video.crf == 28.0
    with pytest.raises(PresetError):
        save_preset_text(text.replace("crf = 28.0", "crf = 99"), target)
    with pytest.raises(AppError):
        save_preset_text(text, tmp_path / "Bad Name.toml")
    assert target.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.toml"]  # no temporary left


async def test_a_burst_of_keys_in_the_toml_editor_all_land(
    seeded: Path, preset_folder: Path
) -> None:
    """Keys that arrive faster than the app handles them (a paste, SSH lag) all land where
    they were typed: the form's refills never come back as edits of their own."""
    path = preset_folder / "small-x265.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        screen.query_one("#preset-tabs").active = "toml-tab"
        editor = editor_of(screen)
        editor.focus()
        row = before.splitlines().index("crf = 28.0")
        editor.move_cursor((row, len("crf = 28.0")))
        await pilot.pause(0.1)
        burst(app, "backspace", "backspace", "backspace", "backspace", "2", "1", "full_stop", "0")
        await pilot.pause(0.5)
        assert editor.text == before.replace("crf = 28.0", "crf = 21.0")
        assert screen.query_one("#f-video-crf", Input).value == "21.0"
        paste = events.Paste("  # was 28")  # a paste arrives in one piece
        paste.set_sender(app)
        app.post_message(paste)
        burst(app, "backspace", "9")
        await pilot.pause(0.5)
        assert editor.text == before.replace("crf = 28.0", "crf = 21.0  # was 29")
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert "+crf = 21.0" in app.screen.query_one("#diff").text


async def test_a_burst_of_keys_in_a_form_field_all_land(seeded: Path, preset_folder: Path) -> None:
    path = preset_folder / "small-x265.toml"
    before = path.read_text()
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        crf = screen.query_one("#f-video-crf", Input)
        crf.focus()
        await pilot.press("end")
        burst(app, "backspace", "backspace", "backspace", "backspace", "1", "9", "full_stop", "5")
        await pilot.pause(0.5)
        assert crf.value == "19.5"
        assert editor_of(screen).text == before.replace("crf = 28.0", "crf = 19.5")


async def test_leaving_with_unsaved_edits_asks_first(seeded: Path, preset_folder: Path) -> None:
    path = preset_folder / "small-x265.toml"
    edited = path.read_text().replace("crf = 28.0", "crf = 22.0")
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        editor_of(screen).text = edited
        await pilot.pause(0.2)
        assert screen.modified
        title = str(screen.query_one("#preset-title", Static).render())
        assert "small-x265" in title and tilde(path) in title and "unsaved" in title
        for leave in ("escape", "f1", "q"):  # back, the queue screen, quit: each asks
            if leave == "q":
                screen.query_one("#preset-list").focus()
            await pilot.press(leave)
            await pilot.pause(0.2)
            assert isinstance(app.screen, ConfirmDiscard), leave
            await pilot.press("f1", "f3", "q")  # inside the dialog: nothing opens, once asked
            await pilot.pause(0.2)
            assert [type(s) for s in app.screen_stack][-2:] == [PresetScreen, ConfirmDiscard]
            await pilot.press("escape")  # keep editing
            await pilot.pause(0.2)
            assert app.screen is screen and editor_of(screen).text == edited
        for _ in range(40):  # Tab all the way round: focus moves, nothing is loaded or lost
            await pilot.press("tab")
        await pilot.pause(0.2)
        assert app.screen is screen and editor_of(screen).text == edited
        await pilot.press("escape")
        await pilot.pause(0.2)
        await pilot.click("#discard")
        await pilot.pause(0.2)
        assert isinstance(app.screen, QueueScreen)
    assert path.read_text() != edited


async def test_the_list_previews_on_highlight_and_asks_before_dropping_edits(
    seeded: Path, preset_folder: Path
) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("3")
        await loaded(pilot, app)
        screen = app.screen
        assert isinstance(screen, PresetScreen)
        names = app.presets()
        assert screen.current is not None and screen.current.stem == names[0]
        screen.query_one("#preset-list").focus()
        await pilot.press("down")  # highlighting a preset shows it
        await loaded(pilot, app)
        assert screen.current.stem == names[1]
        title = str(screen.query_one("#preset-title", Static).render())
        assert names[1] in title and tilde(preset_folder / f"{names[1]}.toml") in title
        editor_of(screen).text += "\n# mine\n"
        await pilot.pause(0.2)
        await pilot.press("down")  # with unsaved edits the highlight does not load
        await loaded(pilot, app)
        assert screen.current.stem == names[1] and "# mine" in editor_of(screen).text
        await pilot.press("enter")  # opening another preset asks
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmDiscard)
        await pilot.click("#keep")
        await loaded(pilot, app)
        assert screen.current.stem == names[1] and "# mine" in editor_of(screen).text
        await pilot.press("down", "enter")  # the list is back on the edited one: down, open
        await pilot.pause(0.2)
        await pilot.click("#discard")
        await loaded(pilot, app)
        assert screen.current.stem == names[2] and not screen.modified


async def test_the_form_says_loading_until_the_preset_is_read(
    seeded: Path, preset_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.tui as tui

    release = threading.Event()
    real = tui.list_presets

    def slow(dirs):  # type: ignore[no-untyped-def]
        if threading.current_thread() is not threading.main_thread():
            release.wait(10)
        return real(dirs)

    monkeypatch.setattr(tui, "list_presets", slow)
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause(0.3)
        form = app.screen.query_one("#form")
        assert "loading…" in "\n".join(screen_text(app))
        assert not form.query_one("#f-video-crf", Input).display or not form.loaded
        assert all("crf" not in line for line in screen_text(app))  # no default posing as value
        release.set()
        await loaded(pilot, app)
        assert form.loaded and "loading…" not in "\n".join(screen_text(app))


async def test_checkboxes_read_true_or_false(seeded: Path, preset_folder: Path) -> None:
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_preset(pilot, app, "slow-x265")  # [restore] auto = false
        box = screen.query_one("#f-restore-auto", Checkbox)
        box.scroll_visible(animate=False)
        box.focus()
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app) if "auto " in line)
        assert "false" in row and "…" not in row, row
        assert box.outer_size.height == 1  # focus does not grow the row
        await pilot.press("space")
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app) if "auto " in line)
        assert "true" in row and "…" not in row, row
        assert "auto = true" in editor_of(screen).text


async def test_editor_keeps_typing_and_screen_keys_still_work(
    seeded: Path, preset_folder: Path
) -> None:
    """With the TOML editor focused, digits are typed (1/2/3 do not switch screens), while
    ctrl+s, ctrl+d and F1-F3 reach the screen and the app."""
    app = make_app(seeded / "queue.db", root=seeded, poll=60, preset_dirs=[preset_folder])
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_preset(pilot, app, "small-x265")
        screen.query_one("#preset-tabs").active = "toml-tab"
        editor = editor_of(screen)
        editor.focus()
        editor.move_cursor((0, 0))
        before = editor.text
        await pilot.press("1", "2", "3")
        await pilot.pause(0.2)
        assert app.screen is screen and editor.text == "123" + before
        await pilot.press("ctrl+d")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NameDialog) and editor.text == "123" + before
        await pilot.press("escape")
        await pilot.pause(0.2)
        editor.text = before
        await pilot.pause(0.2)
        assert not screen.modified
        await pilot.press("f2")
        await pilot.pause(0.3)
        assert isinstance(app.screen, LogScreen)


async def test_job_screen_shows_the_before_after_still(seeded: Path, tmp_path: Path) -> None:
    out = tmp_path / "deliver" / "done.mp4"
    out.parent.mkdir()
    still = out.with_name("done.compare.png")
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=1920x540",  # a before | after still, 3.56:1
            "-frames:v",
            "1",
            str(still),
        ],
        check=True,
    )
    q = Queue(seeded / "queue.db")
    done = next(j for j in q.jobs() if j.name == "done.mp4")
    assert q.reserve_output(done.id, out) == out
    q.close()
    app = make_app(seeded / "queue.db", root=seeded, poll=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        select_row(app, "done.mp4")
        await pilot.press("enter")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        screen = app.screen
        assert str(still) in str(screen.query_one("#still-path", Static).render())
        image = screen.query_one("#still-image")
        assert Path(image.image) == still
        screen.query_one("#job-tabs").active = "still"
        await pilot.pause(0.3)
        # drawn with its aspect kept: as wide as the tab allows, rows to match (not 1fr)
        box = screen.query_one("#still-box").content_size
        cols, rows = image.content_size.width, image.content_size.height
        assert 0 < cols <= box.width and 0 < rows <= box.height
        assert cols == box.width or rows == box.height  # as large as it fits
        cell = get_cell_size()
        drawn = cols * cell.width / (rows * cell.height)
        assert drawn == pytest.approx(1920 / 540, rel=0.1), (cols, rows, cell)
        await pilot.resize_terminal(80, 24)  # refitted when the terminal changes size
        await pilot.pause(0.3)
        cols, rows = image.content_size.width, image.content_size.height
        assert cols <= 80 and cols * cell.width / (rows * cell.height) == pytest.approx(
            1920 / 540, rel=0.1
        )


def test_fit_cells_keeps_the_aspect() -> None:
    from app.format import fit_cells

    assert fit_cells((1920, 540), (98, 20), (10, 20)) == (98, 14)  # limited by the width
    assert fit_cells((960, 540), (98, 10), (10, 20)) == (36, 10)  # limited by the height
    assert fit_cells((0, 540), (98, 10), (10, 20)) == (0, 0)


def fixed_system(paths: list[Path]) -> str:
    return "GPU: no GPU (NVML not available)\nCPU  12.5%  RAM 3.2/16 GiB"


@pytest.mark.parametrize(
    "keys", [(), ("enter",), ("2",), ("3",)], ids=["queue", "job", "logs", "presets"]
)
def test_snapshot(
    snap_compare,
    seeded: Path,
    preset_folder: Path,
    keys: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The main screens at 80x24, as an SSH user sees them."""
    monkeypatch.setenv("HOME", str(preset_folder.parent))  # paths drawn as ~/presets/...
    app = make_app(
        seeded / "queue.db",
        root=seeded,
        poll=3600,
        preset_dirs=[preset_folder],
        sampler=fixed_system,
    )

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot, app)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_real_tui_in_tmux(seeded: Path, tmp_path: Path) -> None:
    session = f"fl{int(time.time() * 1000) % 100000}"
    exe = Path(sys.executable).parent / "finishline"
    cfg = tmp_path / "d.toml"
    cfg.write_text(f'root = "{seeded}"\n')
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "80",
            "-y",
            "24",
            f"TERM=xterm-256color {exe} tui --config {cfg}",
        ],
        check=True,
    )
    try:
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "failed.mp4" in screen:
                break
            time.sleep(0.3)
        assert "failed.mp4" in screen and "daemon NOT RUNNING" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        time.sleep(1.5)
        screen = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout
        assert "job=2 daemon.runtime.worker: processing" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_form_helpers_map_problems_to_keys_and_keep_edits_minimal() -> None:
    from app.preset_form import apply_edit, parse_input, problems_by_key
    from vs_scripts.plan.preset import SCHEMA

    crf = next(k for k in SCHEMA if (k.section, k.name) == ("video", "crf"))
    found = problems_by_key(
        [
            "p.toml: [video] crf = 99 is not allowed; use a number.",
            "p.toml: [frame] 1920x1081 does not fit",
        ]
    )
    assert found == {("video", "crf"): ["[video] crf = 99 is not allowed; use a number."]}
    assert parse_input(crf, "18.5") == 18.5 and parse_input(crf, "abc") == "abc"
    text = '# mine\n[video]\ncrf = 20  # quality\nspeed = "slow"\n'
    assert apply_edit("", crf, 18.0) == ""  # the default of an unwritten key stays unwritten
    assert apply_edit(text, crf, 18.0) == text.replace("crf = 20", "crf = 18.0")
    assert apply_edit(text, crf, 20.0) == text  # the same number: written as it was
    assert apply_edit(text, crf, None) == text.replace("crf = 20  # quality\n", "")
    assert apply_edit("[video\n", crf, 18.0) == "[video\n"  # no parse: left as it is


async def test_opening_the_tui_leaves_the_queue_byte_identical(seeded: Path, tmp_path) -> None:
    """No daemon running: polling, the job screen and the logs only read."""
    db = seeded / "queue.db"
    before = digest(db)
    app = make_app(db, root=seeded, poll=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        select_row(app, "failed.mp4")
        await pilot.press("enter")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.press("escape", "2")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
    assert digest(db) == before
