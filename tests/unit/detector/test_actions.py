"""Alarm actions: a real subprocess and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lisentry.datasets.errors import ConfigError
from lisentry.detector.actions import EVENT_ENV_VAR, AlarmAction

EVENT = {"event": "alarm", "frame": 42, "alarm": "imminent_short", "t_s": 3600.5,
         "potential_V": math.nan, "note": "it's \"bad\"; $(touch pwned) `touch pwned2` | x\n"}
EXPECTED = {**EVENT, "potential_V": None}


def py_command(code: str, *args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-c", code, *args))


def test_command_gets_event_in_env_and_stdin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env_file, stdin_file = tmp_path / "env.json", tmp_path / "stdin.json"
    code = ("import os, sys, pathlib; "
            f"pathlib.Path(sys.argv[1]).write_text(os.environ['{EVENT_ENV_VAR}']); "
            "pathlib.Path(sys.argv[2]).write_text(sys.stdin.read())")
    res = AlarmAction(py_command(code, str(env_file), str(stdin_file))).fire(EVENT)
    assert res.ok and res.command_rc == 0 and res.post_status is None
    assert json.loads(env_file.read_text()) == EXPECTED
    assert json.loads(stdin_file.read_text()) == EXPECTED
    # the shell metacharacters in the event never reached a shell
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_command_output_goes_to_stderr_not_stdout(capfd):
    res = AlarmAction(py_command("print('hello from hook')")).fire({"frame": 1})
    out, err = capfd.readouterr()
    assert res.ok
    assert "hello from hook" in err and "hello from hook" not in out


def test_failing_command_is_reported_not_raised(capfd):
    res = AlarmAction(py_command("import sys; sys.exit(3)")).fire(EVENT)
    assert not res.ok and res.command_rc == 3
    assert "exited with status 3" in res.errors[0]
    err = capfd.readouterr().err
    assert err.count("lisentry:") == 1 and "status 3" in err

    res = AlarmAction("/nonexistent/lisentry-hook --x").fire(EVENT)
    assert not res.ok and res.command_rc is None and "could not start" in res.errors[0]


def test_command_timeout_kills_it(tmp_path):
    marker = tmp_path / "finished"
    code = f"import time, pathlib; time.sleep(20); pathlib.Path({str(marker)!r}).touch()"
    res = AlarmAction(py_command(code), timeout_s=0.5).fire(EVENT)
    assert not res.ok and res.command_rc is None and "timed out" in res.errors[0]
    assert not marker.exists()


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv.received.append((self.headers["Content-Type"], body))
        code = srv.codes.pop(0) if srv.codes else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Recorder)
    srv.received, srv.codes = [], []
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    th.join()


def test_post_sends_event_json(server, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")    # must be bypassed for loopback
    url = f"http://127.0.0.1:{server.server_port}/hook"
    res = AlarmAction(post_url=url).fire(EVENT)
    assert res.ok and res.post_status == 200 and res.post_attempts == 1
    ctype, body = server.received[0]
    assert ctype == "application/json"
    assert json.loads(body) == EXPECTED


def test_post_retries_5xx_but_not_4xx(server):
    url = f"http://127.0.0.1:{server.server_port}/"
    server.codes[:] = [503, 502]
    res = AlarmAction(post_url=url, retries=2).fire({"frame": 1})
    assert res.ok and res.post_attempts == 3 and res.post_status == 200
    server.codes[:] = [404]
    res = AlarmAction(post_url=url, retries=2).fire({"frame": 2})
    assert not res.ok and res.post_attempts == 1 and res.post_status == 404
    assert "HTTP 404" in res.errors[0]


def test_post_to_closed_port_never_raises(capfd):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed once the block ends
    res = AlarmAction(post_url=f"http://127.0.0.1:{port}/", retries=1, timeout_s=2).fire(EVENT)
    assert not res.ok and res.post_attempts == 2 and res.post_status is None
    assert "failed after 2 attempt(s)" in capfd.readouterr().err


def test_command_and_post_together(server, tmp_path):
    f = tmp_path / "e.json"
    code = f"import os, pathlib; pathlib.Path({str(f)!r}).write_text(os.environ['{EVENT_ENV_VAR}'])"
    act = AlarmAction(py_command(code), f"http://127.0.0.1:{server.server_port}/")
    res = act.fire(EVENT)
    assert res.ok and res.command_rc == 0 and res.post_status == 200
    assert json.loads(f.read_text()) == json.loads(server.received[0][1]) == EXPECTED


def test_unserialisable_event_is_reported():
    res = AlarmAction(py_command("pass")).fire({"frame": object()})
    assert not res.ok and "not JSON-serialisable" in res.errors[0]


@pytest.mark.parametrize("kw, field", [
    (dict(command="   "), "command"),
    pytest.param(dict(command="notify 'unclosed"), "command",
                 marks=pytest.mark.skipif(os.name == "nt", reason="shlex is POSIX only")),
    (dict(post_url="ftp://host/x"), "post_url"), (dict(post_url="file:///etc/passwd"), "post_url"),
    (dict(post_url="http://x", timeout_s=0), "timeout_s"),
    (dict(post_url="http://x", retries=-1), "retries")])
def test_config_validation(kw, field):
    with pytest.raises(ConfigError, match=f"'{field}' parameter of AlarmAction"):
        AlarmAction(**kw)
