"""What ``watch`` does when an alarm is raised: run a command and/or POST the event.

:class:`AlarmAction` never raises: a failing hook must not stop the watcher. Failures come
back in the :class:`ActionResult` and as one line on stderr.

The command never goes through a shell and the event data are never pasted into it: the
command string is split with :func:`shlex.split` on POSIX (on Windows it is handed to
``CreateProcess`` as is, which parses it the Windows way), and the event reaches the command
as JSON in the environment variable ``LISENTRY_EVENT`` and on its standard input. The
command's own output goes to our stderr (our stdout carries the data stream of ``watch``).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

from lisentry.datasets.errors import ConfigError
from lisentry.detector.outputs import to_jsonable

__all__ = ["AlarmAction", "ActionResult", "EVENT_ENV_VAR"]

#: Environment variable that carries the event JSON to the alarm command.
EVENT_ENV_VAR = "LISENTRY_EVENT"

_OUTPUT_TAIL = 2000  # characters of the command's output forwarded to stderr


@dataclass
class ActionResult:
    """What :meth:`AlarmAction.fire` did.

    Attributes
    ----------
    command_rc : int or None
        Exit status of the command (``None`` when none was run or it could not start / timed out).
    post_status : int or None
        HTTP status of the last POST attempt (``None`` when none was sent or no answer came).
    post_attempts : int
        Number of POST attempts made.
    errors : list of str
        One line per failure (also printed to stderr).
    """

    command_rc: int | None = None
    post_status: int | None = None
    post_attempts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AlarmAction:
    """Run a command and/or POST the event JSON when an alarm fires.

    Parameters
    ----------
    command : str or None
        Command line, e.g. ``"notify-lab --room 2"`` (no shell: no pipes, no ``$VAR``
        expansion; wrap it in ``sh -c '...'`` yourself if you need a shell).
    post_url : str or None
        ``http://`` or ``https://`` URL that receives ``POST`` with the event as
        ``application/json``. Proxies from the environment are used except for loopback hosts.
    timeout_s : float
        Time limit in seconds for the command and for each POST attempt (> 0).
    retries : int
        Extra POST attempts after a connection error, a timeout or a 5xx answer (>= 0); a 4xx
        answer is not retried. Attempts are 0.5 s, 1 s, ... apart.

    Raises
    ------
    ConfigError
        Bad parameters (empty command, a non-HTTP URL, ...): these are checked at
        construction, so that ``watch`` fails at start and not at the first alarm.

    Examples
    --------
    >>> AlarmAction(None, None).fire({"frame": 1}).ok
    True
    """

    def __init__(self, command: str | None = None, post_url: str | None = None,
                 timeout_s: float = 10, retries: int = 2):
        owner = "AlarmAction"
        if command is not None:
            if not isinstance(command, str) or not command.strip():
                raise ConfigError(f"The 'command' parameter of {owner} must be a non-empty "
                                  f"string or None. Got {command!r}.")
            if os.name != "nt":
                try:
                    argv = shlex.split(command)
                except ValueError as exc:
                    raise ConfigError(f"The 'command' parameter of {owner} cannot be parsed "
                                      f"({exc}). Got {command!r}.") from None
                if not argv:
                    raise ConfigError(f"The 'command' parameter of {owner} is empty. "
                                      f"Got {command!r}.")
        if post_url is not None:
            parts = urllib.parse.urlsplit(str(post_url))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"The 'post_url' parameter of {owner} must be an http(s) URL."
                                  f" Got {post_url!r}.")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not timeout_s > 0:
            raise ConfigError(f"The 'timeout_s' parameter of {owner} must be > 0. "
                              f"Got {timeout_s!r}.")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"The 'retries' parameter of {owner} must be an integer >= 0. "
                              f"Got {retries!r}.")
        self.command = command
        self.post_url = post_url
        self.timeout_s = float(timeout_s)
        self.retries = retries

    def __repr__(self) -> str:
        return (f"AlarmAction(command={self.command!r}, post_url={self.post_url!r}, "
                f"timeout_s={self.timeout_s}, retries={self.retries})")

    @property
    def enabled(self) -> bool:
        return self.command is not None or self.post_url is not None

    def fire(self, event: Mapping[str, Any]) -> ActionResult:
        """Run the command and/or POST the event; never raises.

        Parameters
        ----------
        event : mapping
            The alarm event (the output columns plus what ``watch`` adds); converted with
            :func:`~lisentry.detector.outputs.to_jsonable` (NaN -> null).

        Returns
        -------
        ActionResult
        """
        result = ActionResult()
        try:
            payload = json.dumps(to_jsonable(event), allow_nan=False, ensure_ascii=False)
        except Exception as exc:  # noqa: BLE001 - a hook must never stop the watcher
            self._error(result, f"event is not JSON-serialisable ({exc})")
            return result
        if self.command is not None:
            try:
                self._run_command(payload, result)
            except Exception as exc:  # noqa: BLE001
                self._error(result, f"alarm command {self.command!r} failed: {exc}")
        if self.post_url is not None:
            try:
                self._post(payload, result)
            except Exception as exc:  # noqa: BLE001
                self._error(result, f"POST {self.post_url} failed: {exc}")
        return result

    # -- internals ---------------------------------------------------------------------
    @staticmethod
    def _error(result: ActionResult, msg: str) -> None:
        line = " ".join(msg.split())
        result.errors.append(line)
        print(f"lisentry: {line}", file=sys.stderr, flush=True)

    def _run_command(self, payload: str, result: ActionResult) -> None:
        args: str | list[str] = (self.command if os.name == "nt"
                                 else shlex.split(self.command))
        env = dict(os.environ)
        env[EVENT_ENV_VAR] = payload
        popen_kw: dict = {}
        if os.name == "nt":
            popen_kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            popen_kw["start_new_session"] = True   # so a timeout can end its children too
        try:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, shell=False, **popen_kw)
        except OSError as exc:
            self._error(result, f"alarm command {self.command!r} could not start: "
                                f"{exc.strerror or exc}")
            return
        try:
            out, _ = proc.communicate(payload.encode("utf-8"), timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            try:
                out, _ = proc.communicate(timeout=2)
            except subprocess.TimeoutExpired:   # a grandchild still holds the pipe
                out = None
            self._forward(out)
            self._error(result, f"alarm command {self.command!r} timed out after "
                                f"{self.timeout_s:g} s (killed)")
            return
        self._forward(out)
        result.command_rc = proc.returncode
        if proc.returncode != 0:
            self._error(result, f"alarm command {self.command!r} exited with status "
                                f"{proc.returncode}")

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """End the command we started (and, on POSIX, its process group)."""
        try:
            if os.name != "nt":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except OSError:
            pass

    @staticmethod
    def _forward(output: bytes | None) -> None:
        if output:
            text = output.decode("utf-8", errors="replace")
            if len(text) > _OUTPUT_TAIL:
                text = "..." + text[-_OUTPUT_TAIL:]
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
            sys.stderr.flush()

    def _post(self, payload: str, result: ActionResult) -> None:
        host = urllib.parse.urlsplit(self.post_url).hostname
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        opener = urllib.request.build_opener(*handlers)
        data = payload.encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(0.5 * attempt)
            req = urllib.request.Request(
                self.post_url, data=data, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "lisentry-watch"})
            result.post_attempts += 1
            try:
                with opener.open(req, timeout=self.timeout_s) as resp:
                    result.post_status = resp.status
                    resp.read()
                return
            except urllib.error.HTTPError as exc:
                result.post_status = exc.code
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code < 500:
                    break
            except (urllib.error.URLError, OSError) as exc:   # includes timeouts
                reason = getattr(exc, "reason", exc)
                last = str(reason) or type(exc).__name__
        self._error(result, f"POST {self.post_url} failed after {result.post_attempts} "
                            f"attempt(s): {last}")
