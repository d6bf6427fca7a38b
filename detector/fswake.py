"""File-system notifications that wake ``watch``'s poll loop early (optional, via watchdog).

Polling stays the mechanism that finds frames: a notification only ends the wait between
two polls sooner, and the completion decision (:func:`lisentry.datasets.io.bruker.acquisition_state`)
is the same either way. So a notification that never comes (network shares, an observer that
could not start, watchdog not installed) costs latency, never a frame.

Only changes wake the loop (created, modified, moved, deleted, closed after writing); opens,
read-only closes and attribute changes (atime) do not, so the watcher's own reads never wake
it. The watcher's own output files are ignored too.

Modes (``lisentry watch --fs-events MODE``): ``"auto"`` (default) uses watchdog when it is
installed and polls alone otherwise; ``"on"`` is the same but says so when watchdog is missing
or fails; ``"off"`` polls only.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable

FS_EVENT_MODES = ("auto", "on", "off")

#: watchdog event types that mean something was written, created, moved or removed
_WAKE_TYPES = frozenset({"created", "modified", "moved", "deleted", "closed"})


class FsWakeup:
    """A :class:`threading.Event` set by file-system changes under some folders.

    Use :meth:`start`; ``None`` from it means polling alone.

    Attributes
    ----------
    event : threading.Event
        Set when something changed since the last :meth:`clear`.
    n_wakeups : int
        Number of change notifications seen (for tests and diagnostics).
    """

    def __init__(self, ignore: Iterable[str | Path] = ()):
        self.event = threading.Event()
        self.n_wakeups = 0
        ignore = [os.path.normcase(os.path.abspath(p)) for p in ignore]
        self._ignore = set(ignore)
        # atomic writes go through ".<name>.*.tmp" files beside the target
        self._ignore_tmp = tuple((os.path.dirname(p), "." + os.path.basename(p) + ".")
                                 for p in ignore)
        self._observer = None

    def _ignored(self, path: str) -> bool:
        p = os.path.normcase(os.path.abspath(path))
        if p in self._ignore:
            return True
        d, name = os.path.split(p)
        return any(d == folder and name.startswith(prefix) for folder, prefix in self._ignore_tmp)

    @classmethod
    def start(cls, folders: Iterable[tuple[str | Path, bool]], mode: str = "auto",
              ignore: Iterable[str | Path] = (), log: Callable[[str], None] | None = None
              ) -> "FsWakeup | None":
        """Start watching ``folders`` (``(path, recursive)`` pairs); None when polling alone.

        Folders that do not exist are skipped. Never raises for a missing or failing watchdog:
        polling goes on (``mode="on"`` logs one line saying so).
        """
        if mode not in FS_EVENT_MODES:
            raise ValueError(f"fs-events mode must be one of {FS_EVENT_MODES}, got {mode!r}")
        if mode == "off":
            return None
        say = log or (lambda m: None)
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            if mode == "on":
                say("note: --fs-events on, but watchdog is not installed (pip install "
                    "'lisentry[watch]'); polling only")
            return None
        self = cls(ignore)

        class _Handler(FileSystemEventHandler):
            def on_any_event(handler, event):  # noqa: N805 - watchdog's signature
                self._on_event(event)

        # watchdog's recursive inotify watch warns when a new folder's subfolder is added
        # twice (harmless: the callback is replaced); keep it off the user's stderr
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        try:
            observer = Observer()
            observer.daemon = True
            handler = _Handler()
            n = 0
            for folder, recursive in folders:
                if Path(folder).is_dir():
                    observer.schedule(handler, str(folder), recursive=recursive)
                    n += 1
            if not n:
                if mode == "on":
                    say("note: no folder to watch for file-system events yet; polling only")
                return None
            observer.start()
        except Exception as exc:  # noqa: BLE001 - e.g. the inotify watch limit: poll instead
            if mode == "on":
                say(f"note: file-system events unavailable ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())}); polling only")
            return None
        self._observer = observer
        return self

    def _on_event(self, event) -> None:
        if event.event_type not in _WAKE_TYPES:
            return
        if event.is_directory and event.event_type == "modified":
            return      # a file created/removed in it: that file's own event decides
        paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
        paths = [os.fsdecode(p) for p in paths if p]
        if paths and all(self._ignored(p) for p in paths):
            return
        self.n_wakeups += 1
        self.event.set()

    def clear(self) -> None:
        """Forget the changes seen so far (call before polling)."""
        self.event.clear()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a change; True when one came."""
        return self.event.wait(timeout)

    def stop(self) -> None:
        """Stop the observer thread (idempotent)."""
        obs, self._observer = self._observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(timeout=2.0)
            except Exception:  # noqa: BLE001 - shutting down: nothing useful to report
                pass
