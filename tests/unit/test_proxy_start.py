"""Starting a killed proxy container again: what is read of its log, and from when.

The engine sets ``State.StartedAt`` once it has the process running; a process that writes and
exits at once can write before that (measured here: 3 of 5 busybox ``echo; exit 1`` containers had
their line timestamped before their StartedAt). So the log is read from the end of the last run,
``State.FinishedAt``, never from StartedAt: a Caddy that fails at once is reported with its error.
"""

from __future__ import annotations

import json

import pytest

from compose_atomic import docker
from compose_atomic.errors import ProxyError
from compose_atomic.proxy import caddy

KILLED_AT = "2026-12-03T11:48:30.100000000Z"
STARTED_AT = "2026-12-03T11:48:31.000000000Z"
WRITTEN_AT = "2026-12-03T11:48:30.990000000Z"  # before StartedAt, after the last run ended


class EarlyWriter(docker.Gateway):
    """An engine whose container writes ``line`` just before its StartedAt, then does ``after``."""

    def __init__(self, line: str, after: str) -> None:
        super().__init__()
        self.line, self.after, self.started, self.log_reads = line, after, False, []

    def run(self, command, **kwargs):
        argv = command.argv
        if argv[1] == "inspect":
            status = self.after if self.started else "exited"
            state = {"Status": status, "StartedAt": STARTED_AT if self.started else "x",
                     "FinishedAt": KILLED_AT, "ExitCode": 1 if status == "exited" and self.started else 137}
            return docker.Result(command, 0, json.dumps([{"State": state, "Config": {"Labels": {}}}]))
        if argv[1] == "start":
            self.started = True
            return docker.Result(command, 0, argv[-1])
        if argv[1] == "logs":
            since = argv[argv.index("--since") + 1] if "--since" in argv else None
            self.log_reads.append(since)
            shown = since is None or since <= WRITTEN_AT
            return docker.Result(command, 0, "", self.line + "\n" if shown else "")
        raise AssertionError(argv)


@pytest.fixture
def proxy(tmp_path, monkeypatch):
    monkeypatch.setattr(caddy, "ENGINE_RESTART_WAIT", 0)
    return caddy.CaddyProxy("p", tmp_path, image="caddy:2.11", ports=["8080:80"], routes=[])


def test_a_killed_proxy_started_again_is_read_from_the_end_of_its_last_run(proxy):
    engine = EarlyWriter(f'{{"msg":"{caddy.READY_LINE}"}}', after="running")
    with docker.use(engine):
        proxy._start("p-atomic-proxy")
    assert engine.log_reads == [KILLED_AT]


def test_a_proxy_that_fails_at_once_is_reported_with_its_own_error(proxy):
    error = "Error: loading initial config: listen tcp 127.0.0.1:8080: bind: address already in use"
    engine = EarlyWriter(error, after="exited")
    with docker.use(engine), pytest.raises(ProxyError) as raised:
        proxy._start("p-atomic-proxy")
    assert "address already in use" in str(raised.value)
