"""watchdog glue: handlers only hand paths to the intake (watchdog's debouncer pattern)."""

from __future__ import annotations

import os
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from daemon.runtime.intake import Intake


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


class HotFolderHandler(FileSystemEventHandler):
    """Every event on a file is "something happened to it just now": the intake restarts that
    file's settle clock (a close event is no shortcut: a copy may close and reopen the file)."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def _notice(self, event: FileSystemEvent, path: str | bytes) -> None:
        if not event.is_directory:
            self.intake.notice(_text(path))

    def on_created(self, event: FileSystemEvent) -> None:
        self._notice(event, event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        self._notice(event, event.src_path)

    def on_attrib(self, event: FileSystemEvent) -> None:
        self._notice(event, event.src_path)

    def on_deleted(self, event: FileSystemEvent) -> None:
        self._notice(event, event.src_path)  # the intake forgets it

    def on_moved(self, event: FileSystemEvent) -> None:
        # a download renamed from NAME.part to NAME lands here; the old name is forgotten
        self._notice(event, event.src_path)
        self._notice(event, event.dest_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._notice(event, event.src_path)


def make_observer(hot: Path, intake: Intake, *, polling: bool, poll_interval: float = 1.0):  # type: ignore[no-untyped-def]
    """inotify by default; ``polling`` for network shares where inotify sees nothing. The whole
    hot tree is watched, so a hot folder made later (a new preset) is watched too."""
    observer = PollingObserver(timeout=poll_interval) if polling else Observer()
    observer.schedule(HotFolderHandler(intake), str(hot), recursive=True)
    return observer
