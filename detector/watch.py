"""``lisentry watch``: follow a live acquisition, label each completed frame, raise alarms.

Loop (polling; works on Windows and Linux acquisition PCs; where watchdog is installed,
file-system events end the wait between polls early, see :mod:`lisentry.detector.fswake`):

1. list the experiment folders (or the rows of a growing pseudo-2D ``ser``);
2. take the next unprocessed ones in expno order whose acquisition TopSpin has finished
   (:func:`~lisentry.datasets.io.bruker.acquisition_state`: size proves nothing, TopSpin
   creates a zero-filled full-size fid at the start);
3. read -> process (the bundle's pipeline) -> detector ``update`` -> one JSON line on stdout
   and in the append-only events file -> alarm action on entering ``plating_onset`` or
   ``imminent_short`` -> state file saved atomically.

Restart safety: the event is written (flushed, fsynced) before the state; after a crash in
between, the frame is re-processed to bring the detector forward but its line is not written
again, so the events file holds every frame exactly once. A bad frame is reported and skipped
(written to the events file as a ``skipped`` line), never fatal.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from lisentry.datasets.errors import InputError, LisentryError
from lisentry.datasets.io import bruker
from lisentry.datasets.loading import LoadOptions, RunAssembler, _print_note, _run_id, pipeline_for
from lisentry.datasets.pipeline import ProcessingConfig
from lisentry.detector.actions import AlarmAction
from lisentry.detector.online import OnlineDetector
from lisentry.detector.outputs import EventLog, to_jsonable
from lisentry.detector.state import StateFileError, WatchState

ALARM_CLASSES = ("plating_onset", "imminent_short")


@dataclass
class WatchConfig:
    poll_s: float = 1.0
    until_idle_s: float | None = None
    echem_grace_s: float = 120.0   # wait this long for the log to cover a frame's window
    fs_events: str = "auto"        # file-system events wake the poll early: auto | on | off
    settle_s: float = 0.05         # after a wake-up, let a burst of writes finish first
    arrival_grace_s: float = 60.0  # a frame missing a file is waited for this long after its
                                   # folder last changed (a copy still bringing it), then skipped


class Watcher:
    """Follows one run folder; see the module docstring."""

    def __init__(self, nmr_dir: str | Path, opts: LoadOptions, bundle, events: str | Path,
                 state_path: str | Path | None = None, action: AlarmAction | None = None,
                 config: WatchConfig | None = None, stdout: TextIO | None = None,
                 log: Callable[[str], None] | None = None):
        self.nmr_dir = Path(nmr_dir)
        self.opts = opts
        self.bundle = bundle
        self.cfg = config or WatchConfig()
        self.stdout = stdout if stdout is not None else sys.stdout
        self.log = log or _print_note
        self.action = action
        # (a torn last line left by a kill is cut and reported by EventLog itself, once)
        self.events = EventLog(events)
        try:
            self.state_path = Path(state_path) if state_path else Path(f"{Path(events)}.state.json")
            self.state = WatchState.load(self.state_path)
            config_dict = bundle.processing
            self.pipeline = pipeline_for(opts, ProcessingConfig.from_dict(config_dict) if config_dict else None)
            self.detector = OnlineDetector(bundle, cell=opts.cell)
            self.asm = RunAssembler(_run_id(self.nmr_dir), self.pipeline, None, on_note=self.log)
            self.follower = None
            if opts.echem is not None:
                from lisentry.datasets.io.potentiostat import EchemFollower
                from lisentry.datasets.io.potentiostat import _resolve_start, _zone
                _zone(opts.echem_tz)                      # bad options: one line now, not per poll
                _resolve_start(opts.echem_start, opts.echem_tz)
                self.follower = EchemFollower(opts.echem, start=opts.echem_start, tz=opts.echem_tz,
                                              clock_offset_s=opts.clock_offset_s)
                # a log that exists and cannot be used as it stands (no absolute start, another
                # format) will not mend itself: refuse at start instead of warning at every poll
                self.follower.poll()
            self._restore()
        except BaseException:
            # refused (bad state, options, log): release the events file's lock, so that a
            # corrected start in this process is not told another watcher holds it
            self.events.close()
            raise
        self._waiting_since: dict = {}
        self._echem_notes: set = set()
        self._signatures: dict = {}
        self._stop = False
        self.n_emitted = 0
        self.fs_wakeup = None          # FsWakeup while run() uses file-system events

    # ---------------------------------------------------------------- state
    def _restore(self) -> None:
        s = self.state
        if not s.processed:
            return
        if s.detector_state:
            try:
                self.detector.load_state_dict(s.detector_state, s.detector_tensors)
            except ValueError as exc:
                # e.g. the default model was updated between the two starts: the saved GRU
                # state means nothing to other weights, and restarting from frame 1 would
                # repeat every event already written
                raise StateFileError(self.state_path, f"{exc}; resume with the --model and --cell "
                                                      f"it was saved with, or give a new --state (or "
                                                      f"events file) to start over") from None
        if s.pipeline_state:
            self.pipeline.load_state_dict(s.pipeline_state)
        a = s.extra.get("assembler", {})
        self.asm.t0 = s.t0
        self.asm.n_frames = int(a.get("n_frames", 0))
        self.asm.last_start = datetime.fromisoformat(a["last_start"]) if a.get("last_start") else None
        self.log(f"resuming: {len(s.processed)} frames already handled")

    def _save(self) -> None:
        js, tensors = self.detector.state_dict()
        self.state.detector_state = js
        self.state.detector_tensors = tensors
        self.state.pipeline_state = self.pipeline.state_dict()
        self.state.t0 = self.asm.t0
        self.state.extra["assembler"] = {
            "n_frames": self.asm.n_frames,
            "last_start": self.asm.last_start.isoformat() if self.asm.last_start else None}
        self.state.save(self.state_path)

    # ---------------------------------------------------------------- output
    def _emit(self, event: dict) -> None:
        key = event.get("frame")
        kind = event.get("event", "frame")
        if self.events.already_logged(key, kind):
            return
        self.events.append(event)
        self.stdout.write(json.dumps(to_jsonable(event), allow_nan=False) + "\n")
        self.stdout.flush()
        if kind == "frame":
            self.n_emitted += 1

    # ---------------------------------------------------------------- one frame
    def _candidates(self) -> list[tuple[int, Path, str]]:
        """Unprocessed frames that are complete, in order: (key, path, kind)."""
        listing = bruker.scan_series(self.nmr_dir)
        if listing.ser is not None:
            return [(-1, listing.ser, "ser")]
        out = []
        for expno, path in sorted(listing.experiments + listing.empty):
            if self.state.is_processed(expno):
                continue
            st = bruker.acquisition_state(path)
            if st == "missing" and bruker._successor_started(path):
                # An empty (or data-less) folder that a later acquisition has overtaken will
                # never be filled: read it so that it is reported and skipped, not waited on.
                st = "complete"
            if st != "complete":
                break  # keep acquisition order: wait for this one
            if not self._settled(expno, path):
                break
            out.append((expno, path, "exp"))
        return out

    def _settled(self, expno: int, path: Path) -> bool:
        """With only weak evidence of completion (no ``audita.txt`` end entry, no later
        experiment started: a non-zero fid plus an acqus DATE), take the frame only once its
        files have not changed between two polls, so that a fid caught between TopSpin's
        writes of the data and of the final ``acqus`` is not read with the start-time DATE."""
        if (path / "audita.txt").exists() or bruker._successor_started(path):
            return True
        sig = []
        for name in ("acqus", "fid", "ser"):
            try:
                st = (path / name).stat()
                sig.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                pass
        sig = tuple(sig)
        if self._signatures.get(expno) == sig:
            return True
        self._signatures[expno] = sig
        return False

    def _echem_ready(self, raw) -> bool:
        if self.follower is None:
            return True
        log = self.follower.poll()
        self.asm.echem = log if len(log) else None
        # say each note once: why the log gives nothing (a live .mpr without its timestamp),
        # or what was dropped from it (unreadable rows)
        for note in log.notes:
            if note not in self._echem_notes and note != "file does not exist yet":
                self._echem_notes.add(note)
                self.log(f"note: {self.opts.echem}: {note}")
        if len(log) and log.t_utc_s[-1] >= raw.acq_end.timestamp():
            return True
        first = self._waiting_since.setdefault(raw.expno, time.monotonic())
        return time.monotonic() - first > self.cfg.echem_grace_s

    def _handle_raw(self, key, raw_or_err) -> bool:
        """Process one frame; False when it must wait (potential log not there yet)."""
        if isinstance(raw_or_err, InputError):
            self._skip(key, raw_or_err)
            return True
        raw = raw_or_err
        if not self._echem_ready(raw):
            return False
        try:
            frame = self.asm.add(raw)
            self.detector.update(frame)
        except InputError as err:
            self._skip(key, err)
            return True
        if frame.status.startswith("echem") and self.opts.echem is not None:
            if frame.potential_V is None or not math.isfinite(frame.potential_V):
                self.log(f"note: {self.opts.echem}: potential log does not cover frame "
                         f"{raw.expno} ({frame.status}); labelled on the spectrum alone")
            else:
                self.log(f"note: {self.opts.echem}: potential log covers frame {raw.expno} only "
                         f"in part ({frame.status}); its potential is from the covered part")
        before = self.state.extra.get("alarm")
        row = {"event": "frame", **self.detector.last_row}
        row["alarm"] = self.detector.alarm
        self._emit(row)
        alarm = self.detector.alarm
        if alarm in ALARM_CLASSES and _severity(alarm) > _severity(before):
            ev = {"event": "alarm", "frame": row["frame"], "timestamp": row["timestamp"],
                  "t_s": row["t_s"], "alarm": alarm, "p_plating_onset": row["p_plating_onset"],
                  "p_imminent_short": row["p_imminent_short"], "potential_V": row["potential_V"]}
            self._emit(ev)
            self.log(f"ALARM: {alarm} at frame {row['frame']} ({row['timestamp']})")
            if self.action is not None and not self.events.already_logged(row["frame"], "action"):
                res = self.action.fire(ev)
                self._emit({"event": "action", "frame": row["frame"], "ok": res.ok,
                            "errors": list(res.errors)})
        self.state.extra["alarm"] = alarm
        self.state.mark_processed(key)
        self._save()
        return True

    def _skip(self, key, err: InputError) -> None:
        self.log(f"skipped: {err}")
        self._emit({"event": "skipped", "frame": key, "path": str(err.path), "reason": err.reason})
        self.state.mark_processed(key)
        self._save()

    def poll_once(self) -> int:
        """Handle every newly completed frame; returns how many were handled."""
        n = 0
        for key, path, kind in self._candidates():
            if self._stop:
                break
            if kind == "ser":
                n += self._poll_ser(path)
                continue
            try:
                raw = bruker.read_experiment(path, use_processed=self.opts.use_processed,
                                             expected_nucleus=self.opts.expected_nucleus)
            except bruker.IncompleteAcquisition as err:
                if not bruker._successor_started(path):
                    break  # still acquiring: wait for it
                raw = err  # aborted (a later acquisition started): report and skip it
            except InputError as err:
                if self._still_arriving(path, err):
                    break  # a copy or mirror has not brought the file yet: wait for it
                raw = err
            except Exception as exc:  # noqa: BLE001 - never exit on a bad frame
                raw = InputError(path, f"unexpected {type(exc).__name__}: {exc}")
            if not self._handle_raw(key, raw):
                break
            n += 1
        return n

    def _still_arriving(self, path: Path, err: InputError) -> bool:
        """A file of the frame is missing but its folder changed less than ``arrival_grace_s``
        ago: files are still being copied in (``rsync`` brings ``audita.txt`` before ``fid``)."""
        if err.reason != "missing":
            return False
        newest = 0.0
        for p in (path, *path.iterdir()) if path.is_dir() else ():
            try:
                newest = max(newest, p.stat().st_mtime)
            except OSError:
                pass
        return time.time() - newest < self.cfg.arrival_grace_s

    def _poll_ser(self, ser: Path) -> int:
        try:
            rows = bruker.read_ser(ser, expected_nucleus=self.opts.expected_nucleus)
        except InputError:
            return 0  # still acquiring its first row, or unreadable for now
        n = 0
        for raw in rows:
            if self.state.is_processed(raw.expno):
                continue
            if not self._handle_raw(raw.expno, raw):
                break
            n += 1
        return n

    def stop(self, *_):
        self._stop = True

    def run(self) -> int:
        """Poll until stopped (Ctrl-C / SIGTERM) or idle for ``until_idle_s``; returns frames handled."""
        old = {}
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if sig is not None:
                try:
                    old[sig] = signal.signal(sig, self.stop)
                except ValueError:  # not in the main thread
                    pass
        total, last_new = 0, time.monotonic()
        last_warning = None
        self.fs_wakeup = self._start_fs_events()
        try:
            while not self._stop:
                if self.fs_wakeup is not None:
                    self.fs_wakeup.clear()     # changes from now on wake the next wait
                try:
                    n = self.poll_once()
                    last_warning = None
                except LisentryError as err:
                    # say it once, not at every poll (e.g. a run folder not created yet)
                    if str(err) != last_warning:
                        self.log(f"warning: {err}; waiting")
                    last_warning = str(err)
                    n = 0
                total += n
                if n:
                    last_new = time.monotonic()
                elif self.cfg.until_idle_s is not None and time.monotonic() - last_new >= self.cfg.until_idle_s:
                    break
                if not n:
                    self._wait()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            if self.fs_wakeup is not None:
                self.fs_wakeup.stop()
            self.events.close()
        return total

    def _start_fs_events(self):
        """File-system events on the NMR folder (recursive) and the log's folder, or None."""
        from lisentry.detector.fswake import FsWakeup
        folders = [(self.nmr_dir, True)]
        if self.opts.echem is not None:
            folders.append((Path(self.opts.echem).parent, False))
        return FsWakeup.start(folders, self.cfg.fs_events,
                              ignore=[self.events.path, self.state_path], log=self.log)

    def _wait(self) -> None:
        """Sleep ``poll_s``, or less when a file-system change comes first (then a short
        settle, so that the rest of a burst of writes lands before the next poll)."""
        if self.fs_wakeup is None:
            _sleep(self.cfg.poll_s, lambda: self._stop)
            return
        end = time.monotonic() + self.cfg.poll_s
        while not self._stop:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.fs_wakeup.wait(min(0.05, left)):
                _sleep(min(self.cfg.settle_s, max(0.0, end - time.monotonic())),
                       lambda: self._stop)
                return


def _severity(label) -> int:
    from lisentry.datasets.frame import CLASSES
    return CLASSES.index(label) if label in CLASSES else -1


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
