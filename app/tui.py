"""The Textual TUI: queue, job details, system, logs and presets, over SSH in 80x24.

It reads the daemon's queue database and sends control commands through the same interface
the CLI uses (:class:`daemon.runtime.queue.Queue`). All I/O runs in thread workers; the UI never
blocks, and it keeps working while the daemon is down (the header says so and it reconnects).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ListItem,
    ListView,
    RichLog,
    Select,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)

# textual-image asks the terminal what it can draw (Kitty graphics, Sixel, else coloured half
# cells) when imported, which must happen before Textual takes the terminal over.
from textual_image.widget import Image as StillImage
from textual_image.widget import get_cell_size  # the cell size textual-image draws with

from app.format import chunk_line, fit_cells, fmt_eta, png_size, tilde, worker_cell
from app.preset_form import OrderedTextArea, PresetForm, apply_edit
from daemon.core.artifacts import (
    SCRIPT,
    assessment_beside,
    read_assessment,
    read_probe,
    read_result,
    still_beside,
)
from daemon.engine.chunks import ChunkRow
from daemon.engine.presets import list_presets, save_preset_text
from daemon.runtime.logs import read_log
from daemon.runtime.queue import Queue
from daemon.runtime.reader import Batch, Job, QueueReader
from daemon.runtime.states import JobState
from vs_scripts.plan.errors import AppError, PresetError
from vs_scripts.plan.preset import load_preset

FILTERS: dict[str, tuple[JobState, ...]] = {
    "all": (),
    "active": (JobState.QUEUED, JobState.RUNNING),
    "failed": (JobState.FAILED, JobState.CANCELLED),
    "done": (JobState.DONE,),
}
SORTS = ("id", "state", "priority", "preset")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one poll of the queue found (widgets get this, never DB rows)."""

    jobs: tuple[Job, ...]
    counts: dict[str, int]
    alive: bool
    pid: int | None
    paused: bool
    error: str | None = None
    problems: tuple[str, ...] = ()  # hot folders / files the daemon's intake leaves alone
    devices: Mapping[str, str] = field(default_factory=dict)  # worker -> its device slot


SCREEN_KEYS = "1 queue  2 logs  3 presets (F1-F3 in text fields)"
"""The help line's keys that every screen has (the footer shows each screen's own)."""
PRIORITY = Binding.Group("prio", compact=True)


def bar(fraction: float, width: int = 10) -> str:
    full = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * full + "░" * (width - full)


class JobsRefreshed(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class SystemSampled(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def sample_system(paths: list[Path]) -> str:
    """GPU (NVML), CPU, RAM and disk lines; "no GPU" said plainly."""
    lines = []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                util = pynvml.nvmlDeviceGetUtilizationRates(h)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                temp = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                power = pynvml.nvmlDeviceGetPowerUsage(h) / 1000
                lines.append(
                    f"GPU{i} {util.gpu:3d}%  mem {mem.used / 2**30:5.1f}/"
                    f"{mem.total / 2**30:.0f} GiB  {temp}°C  {power:.0f} W"
                )
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        lines.append("GPU: no GPU (NVML not available)")
    import psutil

    vm = psutil.virtual_memory()
    lines.append(
        f"CPU {psutil.cpu_percent(interval=None):5.1f}%  RAM {vm.used / 2**30:.1f}/"
        f"{vm.total / 2**30:.0f} GiB"
    )
    for p in paths:
        if p.exists():
            du = shutil.disk_usage(p)
            lines.append(
                f"disk {p.name or p}: {du.free / 2**30:.1f} GiB free of {du.total / 2**30:.0f}"
            )
    return "\n".join(lines)


# The queue table's columns, in order: at 80 columns the first eight fit (with the scrollbar);
# the rest are there when the terminal is wider, or by scrolling right (kept across refreshes).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("id", "id", 3),
    ("clip", "clip", 18),
    ("state", "state", 9),
    ("progress", "progress", 10),
    ("fps", "fps", 5),
    ("eta", "eta", 7),
    ("priority", "pri", 3),
    ("attempts", "try", 3),
    ("stage", "stage", 9),  # "cancelled"
    ("worker", "worker", 10),
    ("frames", "frames", 11),
    ("preset", "preset", 14),
    ("batch", "batch", 5),
)


def job_cells(job: Job, devices: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The table cells of one job, in :data:`COLUMNS` order (``devices``: worker name ->
    its device slot)."""
    progress = f"{bar(job.progress, 5)} {round(job.progress * 100):3d}%" if job.total else ""
    return (
        str(job.id),
        job.name,
        str(job.state),
        progress,
        f"{job.fps:.1f}" if job.fps else "",
        fmt_eta(job.eta_s),
        str(job.priority),
        str(job.attempts),
        job.stage,
        worker_cell(job.worker, devices or {}) if job.state == "running" else "",
        f"{job.frame}/{job.total}" if job.total else "",
        job.preset,
        str(job.batch_id or ""),
    )


class QueueScreen(Screen):
    BINDINGS = [
        Binding("enter", "open_job", "Details", show=False),
        Binding("p", "toggle_pause", "pause"),
        Binding("c", "cancel", "cancel"),
        Binding("t", "retry", "retry"),
        Binding("u", "requeue", "requeue"),
        Binding("plus,equals_sign", "priority(1)", "prio+", group=PRIORITY),
        Binding("minus", "priority(-1)", "prio-", group=PRIORITY),
        Binding("f", "cycle_filter", "filter"),
        Binding("s", "cycle_sort", "sort"),
        Binding("o", "output_path", "output", show=False),
    ]
    HELP = f"↵ details  o output  {SCREEN_KEYS}"

    filter_name: reactive[str] = reactive("all")
    """Which jobs the table shows: all, active, failed or done."""
    sort_key: reactive[str] = reactive("id")
    """The column the table is sorted by."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="status", markup=False)
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="system", markup=False)
        yield Static(self.HELP, classes="keys-help", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)

    def show(self, snap: Snapshot) -> None:
        status = self.query_one("#status", Static)
        daemon = f"daemon running (pid {snap.pid})" if snap.alive else "daemon NOT RUNNING"
        if snap.error:
            daemon = f"queue unavailable: {snap.error}"
        counts = "  ".join(f"{k} {v}" for k, v in sorted(snap.counts.items()))
        problems = (
            f"\n{len(snap.problems)} left alone: {snap.problems[0]}"
            + (" (and more: see the log)" if len(snap.problems) > 1 else "")
            if snap.problems
            else ""
        )
        status.update(
            f"{daemon}{'  [PAUSED]' if snap.paused else ''}   {counts}   "
            f"filter: {self.filter_name}  sort: {self.sort_key}{problems}"
        )
        status.set_class(not snap.alive, "down")
        jobs = [
            j
            for j in snap.jobs
            if not FILTERS[self.filter_name] or j.state in FILTERS[self.filter_name]
        ]
        key = {
            "id": lambda j: -j.id,
            "state": lambda j: (j.state, -j.id),
            "priority": lambda j: (-j.priority, j.id),
            "preset": lambda j: (j.preset, j.id),
        }[self.sort_key]
        jobs.sort(key=key)
        self._update_rows(jobs, snap.devices)

    def _update_rows(self, jobs: list[Job], devices: Mapping[str, str]) -> None:
        """Change the table in place, row by row (keyed by job id), so the cursor and the
        scroll position stay where the user put them."""
        table = self.query_one("#jobs", DataTable)
        selected = self.selected_id()
        wanted = {str(j.id): job_cells(j, devices) for j in jobs}
        for row_key in [k for k in table.rows if k.value not in wanted]:
            table.remove_row(row_key)
        columns = [key for key, _, _ in COLUMNS]
        for row_key, cells in wanted.items():
            if row_key not in table.rows:
                table.add_row(*cells, key=row_key)
                continue
            for column, old, new in zip(columns, table.get_row(row_key), cells, strict=True):
                if old != new:
                    table.update_cell(row_key, column, new)
        order = {row_key: i for i, row_key in enumerate(wanted)}
        if [r.key.value for r in table.ordered_rows] != list(wanted):
            table.sort("id", key=lambda cell: order[str(cell)])
        if selected is not None and str(selected) in wanted:
            row = table.get_row_index(str(selected))
            if row != table.cursor_row:
                table.move_cursor(row=row)

    def selected_id(self) -> int | None:
        table = self.query_one("#jobs", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key and key.value else None

    def _control(self, fn_name: str, *args: object) -> None:
        job_id = self.selected_id()
        if job_id is None:
            self.notify("no job selected", severity="warning")
            return
        self.app.control(fn_name, job_id, *args)  # type: ignore[attr-defined]

    def action_cancel(self) -> None:
        """Asks first: a cancel kills a running encode and files the source in failed/."""
        job = self.app.job(self.selected_id())  # type: ignore[attr-defined]
        if job is None or job.state not in ("queued", "running"):
            self._control("cancel")  # says why it cannot
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.control("cancel", job.id)  # type: ignore[attr-defined]

        self.app.push_screen(ConfirmCancel(job.name, job.state), answered)

    def action_retry(self) -> None:
        self._control("retry")

    def action_requeue(self) -> None:
        self._control("requeue")

    def action_priority(self, delta: int) -> None:
        """One atomic change per press (``priority = priority + delta`` in the queue), so quick
        presses each count instead of writing a value read from a stale snapshot."""
        self._control("change_priority", delta)

    def action_toggle_pause(self) -> None:
        self.app.toggle_pause()  # type: ignore[attr-defined]

    def action_cycle_filter(self) -> None:
        names = list(FILTERS)
        self.filter_name = names[(names.index(self.filter_name) + 1) % len(names)]
        self.app.refresh_now()  # type: ignore[attr-defined]

    def action_cycle_sort(self) -> None:
        self.sort_key = SORTS[(SORTS.index(self.sort_key) + 1) % len(SORTS)]
        self.app.refresh_now()  # type: ignore[attr-defined]

    def action_output_path(self) -> None:
        job = self.app.job(self.selected_id())  # type: ignore[attr-defined]
        if job:
            where = job.output or "(no output yet)"
            self.notify(
                f"{where}\nfolder: {Path(job.output).parent if job.output else '-'}",
                title=f"job {job.id} output",
            )

    def action_open_job(self) -> None:
        job_id = self.selected_id()
        if job_id is not None:
            self.app.push_screen(JobScreen(job_id))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_job()


class JobScreen(Screen):
    """Everything about one job: probe, assessment, stages, script, error, log lines, still."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self._still_pixels: tuple[int, int] | None = None  # the still's width, height

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="job-tabs"):
            with TabPane("Facts", id="facts"):
                yield VerticalScroll(Static("loading…", id="facts-text", markup=False))
            with TabPane("Script", id="script"):
                yield TextArea("", id="vpy", read_only=True, language="python")
            with TabPane("Error", id="error"):
                yield VerticalScroll(Static("", id="error-text", markup=False))
            with TabPane("Log", id="joblog"):
                yield RichLog(id="job-log", wrap=True, markup=False)
            with TabPane("Still", id="still"):
                yield Static("", id="still-path", markup=False)
                with Container(id="still-box"):
                    yield StillImage(None, id="still-image")
        yield Static(SCREEN_KEYS, classes="keys-help", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._state = ""  # the job's state when its screen was last filled
        self.load()
        self.set_interval(1.0, self.follow)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="job-detail",
        description="read job files",
    )
    def load(self) -> None:
        app: FinishlineApp = self.app  # type: ignore[assignment]
        job = app.job(self.job_id)
        if job is None:
            self.app.call_from_thread(self.notify, f"job {self.job_id} is gone", severity="error")
            return
        facts, script, still = self._facts(app, job)
        lines = app.log_lines(job_filter=job.id, limit=300)
        error = job.report or job.error or "no error"
        self._state = str(job.state)
        self.app.call_from_thread(self._fill, "\n".join(facts), script, error, lines, still)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="job-follow",
        description="follow the job",
    )
    def follow(self) -> None:
        """Once a second: a queued or running job's facts (its worker and device, its chunks
        and who runs them, its stage), and everything again when its state changes (its
        error, log and still); the script and log tabs stay as the user scrolled them."""
        app: FinishlineApp = self.app  # type: ignore[assignment]
        job = app.job(self.job_id)
        if job is None or not self._state:
            return
        if str(job.state) != self._state:
            self.app.call_from_thread(self.load)
        elif job.state in ("queued", "running"):
            facts, _, _ = self._facts(app, job)
            self.app.call_from_thread(self._follow_facts, "\n".join(facts), str(job.state))

    def _follow_facts(self, facts: str, state: str) -> None:
        """The facts :meth:`follow` read, unless the screen was closed or filled again for a
        new state meanwhile (a late read must not put back the old state's facts)."""
        if self.is_attached and state == self._state:
            self.query_one("#facts-text", Static).update(facts)

    def _facts(self, app: FinishlineApp, job: Job) -> tuple[list[str], str, Path | None]:
        """The Facts tab's lines, the script and the still, read from the job's files."""
        facts = [
            f"{job.name}  (job {job.id}, preset {job.preset}, batch {job.batch_id})",
            f"state {job.state}, stage {job.stage}, attempts {job.attempts}",
            f"source: {job.src}",
            f"output: {job.output or '-'}",
        ]
        if job.note and job.state in ("queued", "running"):
            facts.insert(2, f"waiting: {job.note}")
        elif job.state == "queued" and app.snapshot.paused:
            facts.insert(2, "waiting: the queue is paused (p on the queue screen resumes)")
        if job.state == "running":
            devices = app.devices()
            if line := chunk_line(app.chunks(job.id), devices):
                facts.insert(2, line)
            if job.worker:
                facts.insert(2, f"on {job.worker} {devices.get(job.worker, '')}".rstrip())
        batch = app.batch(job.batch_id)
        if batch is not None and batch.assembly_state not in ("", "none"):
            facts.append(
                f"sequence {batch.name}: {batch.assembly_state}"
                f"{' -> ' + batch.assembly_output if batch.assembly_output else ''}"
                f"{' (' + batch.assembly_error + ')' if batch.assembly_error else ''}"
            )
        script = ""
        work_dir = Path(job.work_dir) if job.work_dir else None
        if work_dir:
            probe = read_probe(work_dir)
            if probe is not None:
                facts.append(f"probe: {probe.line()}")
            result = read_result(work_dir)
            if result is not None:
                facts.append(f"stages: {result.timing_line()}")
            with contextlib.suppress(OSError, UnicodeDecodeError):
                script = (work_dir / SCRIPT).read_text()
        still = None
        if job.output:
            out = Path(job.output)
            assessment = read_assessment(assessment_beside(out))
            if assessment is not None:
                facts.append(f"assessment: {assessment.line()}")
                facts.append(f"colour: reference {assessment.reference}; {assessment.match_reason}")
            candidate = still_beside(out)
            still = candidate if candidate.exists() else None
            facts.append(f"before/after still: {still or '(none)'}")
            self._still_pixels = png_size(still) if still is not None else None
            if self._still_pixels is None:
                still = None  # not a PNG we can read: say there is none
        return facts, script, still

    def _fill(
        self, facts: str, script: str, error: str, lines: list[str], still: Path | None = None
    ) -> None:
        self.query_one("#still-path", Static).update(
            f"before | after: {still}"
            if still
            else "no before/after still yet (written beside the output when the job is done)"
        )
        self.query_one("#still-image", StillImage).image = still
        self.call_after_refresh(self._fit_still)
        self.query_one("#facts-text", Static).update(facts)
        self.query_one("#vpy", TextArea).text = script or "# no script yet"
        self.query_one("#error-text", Static).update(error)
        log = self.query_one("#job-log", RichLog)
        log.clear()
        for line in lines:
            log.write(line)

    def _fit_still(self) -> None:
        """Size the still in whole cells so it keeps its aspect in the room the tab has
        (textual-image draws an image into whatever box it is given, stretched to fit)."""
        image = self.query_one("#still-image", StillImage)
        box = self.query_one("#still-box").content_size
        if image.image is None or not self._still_pixels or not box.area:
            return
        cols, rows = fit_cells(self._still_pixels, (box.width, box.height), get_cell_size())
        image.styles.width, image.styles.height = cols, rows

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._fit_still)

    @on(TabbedContent.TabActivated, "#job-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        self.call_after_refresh(self._fit_still)  # a hidden tab has no size to fit in


class LogScreen(Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "back")]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="log-controls"):
            yield Select(
                [(lvl, lvl) for lvl in ("DEBUG", "INFO", "WARNING", "ERROR")],
                value="INFO",
                allow_blank=False,
                id="level",
            )
            yield Input(placeholder="search", id="search")
        yield RichLog(id="log", wrap=True, markup=False, max_lines=5000)
        yield Static(SCREEN_KEYS, classes="keys-help", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.reload)
        self.reload()

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: object) -> None:
        self.reload()

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="log-tail",
        description="tail the log",
    )
    def reload(self) -> None:
        app: FinishlineApp = self.app  # type: ignore[assignment]
        level = self.query_one("#level", Select).value
        needle = self.query_one("#search", Input).value
        lines = app.log_lines(min_level=str(level), search=needle, limit=1000)
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: list[str]) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        for line in lines:
            log.write(line)


class PresetLoaded(Message):
    """A preset file was read (in a worker) and can be shown."""

    def __init__(self, name: str, path: Path, text: str) -> None:
        super().__init__()
        self.name = name
        self.path = path
        self.text = text


class PresetScreen(Screen):
    """Presets: pick one, edit it in a form (one field per key) or as TOML, every error shown
    next to its key; a diff before saving; duplicate under a new name.

    Unsaved edits are never dropped without asking: leaving the screen or opening another
    preset asks first, and moving through the list previews presets only while nothing is
    edited. The title line names the preset being edited and its file."""

    BINDINGS = [
        Binding("escape", "leave", "back"),
        # priority: a focused TextArea would take ctrl+d (delete right) and ctrl+s
        Binding("ctrl+s", "save", "save", priority=True),
        Binding("ctrl+d", "duplicate", "duplicate", priority=True),
    ]
    HELP = "↑↓ preview  ↵ open  F1 queue  F2 logs  F3 presets (1 2 3 outside text)"

    modified: reactive[bool] = reactive(False)
    """Whether the editor's text differs from the file it was loaded from."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Path | None = None
        self.original = ""
        self._wanted: str | None = None  # the preset a load was last asked for

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield ListView(id="preset-list")
            with Vertical(id="editor-pane"):
                yield Static("loading…", id="preset-title", markup=False)
                with TabbedContent(id="preset-tabs"):
                    with TabPane("Form", id="form-tab"):
                        yield PresetForm(id="form")
                    with TabPane("TOML", id="toml-tab"):
                        yield OrderedTextArea("", id="editor", language="toml")
                yield Static("", id="problems", markup=False)
        yield Static(self.HELP, classes="keys-help", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        lv = self.query_one("#preset-list", ListView)
        names = self.app.presets()  # type: ignore[attr-defined]
        for name in names:
            lv.append(ListItem(Label(name), name=name))
        if names:
            self.load(names[0])
        else:
            self.query_one("#preset-title", Static).update("no presets found")

    # -- loading ------------------------------------------------------------------------------

    @property
    def name_shown(self) -> str | None:
        return self.current.stem if self.current else None

    def load(self, name: str) -> None:
        """Read preset ``name`` in a worker and show it (the latest request wins)."""
        self._wanted = name
        self._read(name)

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="preset-load",
        description="read a preset file",
    )
    def _read(self, name: str) -> None:
        try:
            path = list_presets(self.app.preset_dirs)[name]  # type: ignore[attr-defined]
            text = path.read_text(encoding="utf-8")
        except (KeyError, OSError, UnicodeDecodeError) as exc:
            self.app.call_from_thread(
                self.notify, str(exc), title=f"cannot read preset {name}", severity="error"
            )
            return
        self.post_message(PresetLoaded(name, path, text))

    def on_preset_loaded(self, message: PresetLoaded) -> None:
        if message.name != self._wanted:
            return  # the user has moved on to another preset
        self.current, self.original = message.path, message.text
        editor = self.query_one("#editor", TextArea)
        with self.prevent(TextArea.Changed):
            editor.load_text(message.text)
        self.query_one("#form", PresetForm).fill(message.text, force=True)
        self.modified = False
        self._show_title()
        self.validate()
        self._select_in_list(message.name)

    def _select_in_list(self, name: str) -> None:
        lv = self.query_one("#preset-list", ListView)
        for i, item in enumerate(lv.children):
            if isinstance(item, ListItem) and item.name == name and lv.index != i:
                with self.prevent(ListView.Highlighted):
                    lv.index = i

    def watch_modified(self, modified: bool) -> None:
        self._show_title()

    def _show_title(self) -> None:
        if self.current is None:
            return
        title = self.query_one("#preset-title", Static)
        target = self.app.writable_preset_path(self.current.stem)  # type: ignore[attr-defined]
        saves = "" if target == self.current else f"  (saved to {tilde(target)})"
        title.update(
            f"{self.current.stem}{'  ● unsaved edits' if self.modified else ''}  "
            f"{tilde(self.current)}{saves}"
        )
        title.set_class(self.modified, "modified")

    # -- moving around, never losing edits -----------------------------------------------------

    @on(ListView.Highlighted, "#preset-list")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        name = event.item.name if event.item else None
        if name and name != self.name_shown and not self.modified:
            self.load(name)

    @on(ListView.Selected, "#preset-list")
    def _picked(self, event: ListView.Selected) -> None:
        name = event.item.name
        if not name:
            return
        if name == self.name_shown:
            self.query_one("#preset-tabs", TabbedContent).focus()
            return
        self.confirm_discard(lambda: self.load(name), on_keep=self._back_to_current)

    def _back_to_current(self) -> None:
        if self.name_shown:
            self._select_in_list(self.name_shown)

    def confirm_discard(
        self, then: Callable[[], object], on_keep: Callable[[], object] | None = None
    ) -> None:
        """Run ``then`` now when nothing is edited, else once the user agrees to drop the
        edits (``on_keep`` when they keep them)."""
        if not self.modified or self.current is None:
            then()
            return
        if isinstance(self.app.screen, ConfirmDiscard):
            return  # already asking

        def answered(discard: bool | None) -> None:
            if discard:
                self.modified = False
                then()
            elif on_keep is not None:
                on_keep()

        self.app.push_screen(ConfirmDiscard(self.current.stem), answered)

    def action_leave(self) -> None:
        self.confirm_discard(self.app.pop_screen)

    # -- editing ------------------------------------------------------------------------------

    @on(TextArea.Changed, "#editor")
    def _edited(self, event: TextArea.Changed) -> None:
        text = event.text_area.text
        self.modified = self.current is not None and text != self.original
        self.query_one("#form", PresetForm).fill(text)
        self.validate()

    @on(PresetForm.Edited)
    def _form_edited(self, event: PresetForm.Edited) -> None:
        if self.current is None:
            return
        editor = self.query_one("#editor", TextArea)
        try:
            tomllib.loads(editor.text)
        except tomllib.TOMLDecodeError:
            self.notify("the TOML does not parse; fix it in the TOML tab first", severity="error")
            return
        new = apply_edit(editor.text, event.key, event.value)
        if new != editor.text:
            editor.replace(new, editor.document.start, editor.document.end)

    def validate(self) -> list[str]:
        text = self.query_one("#editor", TextArea).text
        problems: list[str] = []
        try:
            load_preset(text, source=self.current.name if self.current else "preset")
        except PresetError as exc:
            problems = exc.problems
        self.query_one("#problems", Static).update(
            "\n".join(f"✗ {p}" for p in problems) if problems else "✓ valid"
        )
        self.query_one("#problems", Static).set_class(bool(problems), "invalid")
        self.query_one("#form", PresetForm).show_problems(problems)
        return problems

    # -- saving -------------------------------------------------------------------------------

    def action_save(self) -> None:
        if self.current is None:
            return
        text = self.query_one("#editor", TextArea).text
        if self.validate():
            self.notify(
                "not saved: fix the problems shown under the editor",
                title="invalid preset",
                severity="error",
            )
            return
        diff = "\n".join(
            difflib.unified_diff(
                self.original.splitlines(), text.splitlines(), "saved", "edited", lineterm=""
            )
        )
        if not diff:
            self.notify("no changes")
            return
        self.app.push_screen(ConfirmDiff(diff), self._confirmed)

    def _confirmed(self, ok: bool | None) -> None:
        if not ok or self.current is None:
            return
        text = self.query_one("#editor", TextArea).text
        target = self.app.writable_preset_path(self.current.stem)  # type: ignore[attr-defined]
        try:
            save_preset_text(text, target)  # exactly the text the diff was made from
        except (AppError, OSError) as exc:
            self.notify(str(exc), title="not saved", severity="error")
            return
        self.current, self.original = target, text
        self.modified = False
        self._show_title()
        self.notify(f"saved {target}")

    def action_duplicate(self) -> None:
        if self.current is not None:
            self.app.push_screen(NameDialog(f"{self.current.stem}-copy"), self._duplicated)

    def _duplicated(self, name: str | None) -> None:
        if not name or self.current is None:
            return
        try:
            target = self.app.writable_preset_path(name)  # type: ignore[attr-defined]
            text = self.query_one("#editor", TextArea).text
            save_preset_text(text, target)
            self.app.make_hot_folder(name)  # type: ignore[attr-defined]
        except (AppError, OSError) as exc:
            self.notify(str(exc), title="cannot duplicate", severity="error")
            return
        self.query_one("#preset-list", ListView).append(ListItem(Label(name), name=name))
        self.notify(f"created {target} and its hot folder")


class ConfirmDiscard(ModalScreen[bool]):
    """Asked before unsaved preset edits would be dropped."""

    BINDINGS = [Binding("escape", "dismiss(False)", "keep editing")]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.preset = name

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(f"{self.preset} has unsaved edits. Discard them?", markup=False)
            with Horizontal():
                yield Button("Keep editing", variant="primary", id="keep")
                yield Button("Discard", variant="error", id="discard")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "discard")


class ConfirmCancel(ModalScreen[bool]):
    """Asked before a job is cancelled."""

    BINDINGS = [Binding("escape", "dismiss(False)", "keep it")]

    def __init__(self, name: str, state: str) -> None:
        super().__init__()
        self.job_name, self.state = name, state

    def compose(self) -> ComposeResult:
        what = "stop its encode and file" if self.state == "running" else "file"
        with Vertical(id="confirm"):
            yield Label(
                f"Cancel {self.job_name}? This will {what} its source in failed/ "
                "(retry brings it back).",
                markup=False,
            )
            with Horizontal():
                yield Button("Keep it", variant="primary", id="keep")
                yield Button("Cancel the job", variant="error", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "cancel")


class ConfirmDiff(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel")]

    def __init__(self, diff: str) -> None:
        super().__init__()
        self.diff = diff

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Save these changes?")
            yield TextArea(self.diff, read_only=True, language=None, id="diff")
            with Horizontal():
                yield Button("Save", variant="primary", id="yes")
                yield Button("Cancel", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class NameDialog(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("New preset name (lowercase, digits, . _ -):")
            yield Input(self.default, id="name")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", value):
            self.notify("use lowercase letters, digits, '.', '_' and '-'", severity="error")
            return
        self.dismiss(value)


class FinishlineApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "finishline"
    BINDINGS = [
        # 1/2/3 are typed into text fields; F1/F2/F3 switch screens from anywhere
        Binding("1,f1", "show_queue", "queue", show=False),
        Binding("2,f2", "show_logs", "logs", show=False),
        Binding("3,f3", "show_presets", "presets", show=False),
        Binding("r", "refresh_now", "refresh", show=False),
        Binding("q", "quit", "quit"),
        Binding("ctrl+q", "quit", "quit", show=False),
    ]

    def __init__(
        self,
        db_path: Path,
        *,
        root: Path | None = None,
        preset_dirs: list[Path] | None = None,
        poll: float = 1.0,
        sampler: Callable[[list[Path]], str] = sample_system,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.db_path = Path(db_path)
        self.root = root or self.db_path.parent
        self.preset_dirs = preset_dirs
        self.poll = poll
        self.snapshot = Snapshot((), {}, False, None, False)
        self._reader: QueueReader | None = None
        self._control_queue: Queue | None = None

    # -- data (thread workers) -------------------------------------------------------------------

    def queue(self) -> QueueReader:
        """The read-only view every poll uses: opening it never changes ``queue.db``."""
        if self._reader is None:
            self._reader = QueueReader(self.db_path, timeout=2.0)
        return self._reader

    def control_queue(self) -> Queue:
        """The read-write queue, opened only when the user sends a command (never created)."""
        if self._control_queue is None:
            self._control_queue = Queue(self.db_path, timeout=2.0, create=False)
        return self._control_queue

    def on_mount(self) -> None:
        self.push_screen(QueueScreen())
        self.set_interval(self.poll, self.refresh_now)
        self.set_interval(2.0, self.sample)
        self.refresh_now()
        self.sample()

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="queue-poll",
        description="poll the queue",
    )
    def refresh_now(self) -> None:
        try:
            q = self.queue()
            alive, pid, _ = q.daemon_status()
            problems = tuple(f"{k}: {v}" for k, v in sorted(q.intake_problems().items()))
            snap = Snapshot(
                tuple(q.jobs(limit=2000)), q.counts(), alive, pid, q.paused, None, problems,
                q.devices(),
            )  # fmt: skip
        except Exception as exc:  # daemon restarting, db missing, locked: show it, retry
            self._reader = None
            snap = Snapshot(self.snapshot.jobs, self.snapshot.counts, False, None, False, str(exc))
        self.post_message(JobsRefreshed(snap))

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="system",
        description="sample GPU/CPU/disk",
    )
    def sample(self) -> None:
        text = self.sampler([self.root / "work", self.root / "out"])
        self.post_message(SystemSampled(text))

    def _queue_screen(self) -> QueueScreen | None:
        """The queue screen when it is the one shown (none while the app shuts down)."""
        if not self.screen_stack:
            return None
        return self.screen if isinstance(self.screen, QueueScreen) else None

    def on_jobs_refreshed(self, message: JobsRefreshed) -> None:
        self.snapshot = message.snapshot
        if screen := self._queue_screen():
            screen.show(message.snapshot)

    def on_system_sampled(self, message: SystemSampled) -> None:
        if screen := self._queue_screen():
            screen.query_one("#system", Static).update(message.text)

    def batch(self, batch_id: int | None) -> Batch | None:
        if batch_id is None:
            return None
        try:
            return self.queue().batch(batch_id)
        except Exception:
            return None

    def devices(self) -> dict[str, str]:
        """Worker name -> its device slot (read-only)."""
        try:
            return self.queue().devices()
        except Exception:
            return {}

    def chunks(self, job_id: int) -> list[ChunkRow]:
        """A job's chunks (read-only): none for a job that is not chunked."""
        try:
            return self.queue().chunks(job_id)
        except Exception:
            return []

    def job(self, job_id: int | None) -> Job | None:
        if job_id is None:
            return None
        try:
            return self.queue().get(job_id)
        except Exception:
            return None

    def control(self, fn_name: str, job_id: int, *args: object) -> None:
        self._control(fn_name, job_id, args)

    @work(thread=True, exit_on_error=False, group="control", description="send a command")
    def _control(self, fn_name: str, job_id: int, args: tuple[object, ...]) -> None:
        try:
            job = getattr(self.control_queue(), fn_name)(job_id, *args)
            msg = f"job {job.id}: {job.state}" + (
                " (cancel requested)" if job.cancel_requested and job.state == "running" else ""
            )
            if fn_name in ("change_priority", "set_priority"):
                msg += f", priority {job.priority}"
            self.call_from_thread(self.notify, msg, title=fn_name.replace("_", " "))
        except Exception as exc:  # TransitionError, or the database going away
            self.call_from_thread(
                self.notify, str(exc), title=f"{fn_name} failed", severity="error"
            )
        self.refresh_now()

    def toggle_pause(self) -> None:
        self._pause()

    @work(thread=True, exit_on_error=False, group="control", description="pause/resume")
    def _pause(self) -> None:
        try:
            q = self.control_queue()
            q.pause(not q.paused)
            self.call_from_thread(self.notify, "paused" if q.paused else "resumed")
        except Exception as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
        self.refresh_now()

    def log_lines(
        self,
        *,
        job_filter: int | None = None,
        min_level: str = "DEBUG",
        search: str = "",
        limit: int = 500,
    ) -> list[str]:
        path = self.root / "logs" / "finishline.log"
        if not path.exists():
            return ["(no log yet)"]
        lines = read_log(path, job=job_filter, min_level=min_level, search=search, limit=limit)
        return [line.text for line in lines]

    def presets(self) -> list[str]:
        return list(list_presets(self.preset_dirs))

    def writable_preset_path(self, name: str) -> Path:
        from daemon.engine.presets import user_dir

        env = os.environ.get("FINISHLINE_PRESETS")
        base = (
            Path(env.split(os.pathsep)[0])
            if env
            else (self.preset_dirs[0] if self.preset_dirs else user_dir())
        )
        return base / f"{name}.toml"

    def make_hot_folder(self, name: str) -> None:
        (self.root / "hot" / name).mkdir(parents=True, exist_ok=True)
        (self.root / "out" / name).mkdir(parents=True, exist_ok=True)

    # -- navigation -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No screen switching from inside a dialog (it would open behind or above it)."""
        if action.startswith("show_") and self.screen_stack:
            return not isinstance(self.screen, ModalScreen)
        return True

    def _edited_presets(self) -> PresetScreen | None:
        """A preset screen in the stack with unsaved edits (leaving it would drop them)."""
        return next(
            (s for s in self.screen_stack if isinstance(s, PresetScreen) and s.modified), None
        )

    def action_show_queue(self) -> None:
        edited = self._edited_presets()
        if edited is not None:
            edited.confirm_discard(self._pop_to_queue)
        else:
            self._pop_to_queue()

    def _pop_to_queue(self) -> None:
        while not isinstance(self.screen, QueueScreen) and len(self.screen_stack) > 2:
            self.pop_screen()

    async def action_quit(self) -> None:
        edited = self._edited_presets()
        if edited is not None:
            edited.confirm_discard(self.exit)
        else:
            self.exit()

    def action_show_logs(self) -> None:
        self.push_screen(LogScreen())

    def action_show_presets(self) -> None:
        self.push_screen(PresetScreen())

    def action_refresh_now(self) -> None:
        self.refresh_now()


def make_app(
    db_path: Path,
    *,
    root: Path | None = None,
    preset_dirs: list[Path] | None = None,
    poll: float = 1.0,
    sampler: Callable[[list[Path]], str] = sample_system,
) -> FinishlineApp:
    """Shared by ``finishline tui`` and the tests (posting's make_posting). ``sampler`` gives
    the system panel's text (tests pass a fixed one for snapshots)."""
    return FinishlineApp(db_path, root=root, preset_dirs=preset_dirs, poll=poll, sampler=sampler)
