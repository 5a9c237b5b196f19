"""watchdog glue: handlers only hand paths to the intake (watchdog's debouncer pattern)."""

from __future__ import annotations

from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from daemon.runtime.intake import Intake


class HotFolderHandler(FileSystemEventHandler):
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.notice(str(event.src_path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.notice(str(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        # a download renamed from NAME.part to NAME lands here
        if not event.is_directory:
            self.intake.notice(str(event.dest_path))

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.intake.notice(str(event.src_path), closed=True)


def make_observer(hot: Path, intake: Intake, *, polling: bool, poll_interval: float = 1.0):  # type: ignore[no-untyped-def]
    """inotify by default; ``polling`` for network shares where inotify sees nothing."""
    observer = PollingObserver(timeout=poll_interval) if polling else Observer()
    observer.schedule(HotFolderHandler(intake), str(hot), recursive=True)
    return observer
