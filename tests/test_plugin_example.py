"""The example third-party plugin (examples/plugins/compose-atomic-notify), installed with pip.

The package is pip-installed into a temporary directory put on PYTHONPATH of the
compose-atomic subprocesses, so the shared virtualenv (and every other test) never
sees it. Its hooks firing during a real rollback are covered by the deploy tests.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compose_atomic.project import ComposeOptions, Project
from conftest import ROOT, run_cli

PLUGIN = ROOT / "examples" / "plugins" / "compose-atomic-notify"
HOOKS = ["after_deploy", "on_rollback", "register_commands", "register_config_schema", "validate_config"]


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """compose-atomic-notify installed by pip (from this checkout) into its own directory."""
    site = tmp_path_factory.mktemp("notify-site")
    source = tmp_path_factory.mktemp("notify-src") / PLUGIN.name  # pip's build/ stays out of the checkout
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--disable-pip-version-check", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return site


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory) -> Path:
    """A distribution whose compose_atomic entry point raises on import."""
    site = tmp_path_factory.mktemp("broken-site")
    (site / "broken_plugin.py").write_text('raise RuntimeError("this plugin is broken on purpose")\n')
    dist = site / "compose_atomic_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: compose-atomic-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[compose_atomic]\nbroken = broken_plugin\n")
    return site


def cli(*args: str, sites: list[Path], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    pythonpath = ":".join(str(s) for s in sites)
    return run_cli(*args, cwd=cwd, env={"PYTHONPATH": pythonpath, "NO_PROXY": "127.0.0.1", **(env or {})},
                   timeout=60)


@pytest.fixture
def receiver():
    """A chat webhook on 127.0.0.1 that records what it receives (status settable)."""
    received: list[dict] = []
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "json": json.loads(body),
                             "type": self.headers.get("Content-Type")})
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/SECRET-TOKEN"
    yield url, received, state
    server.shutdown()
    server.server_close()


def write_project(folder: Path, notify: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compose.yaml").write_text(
        "x-atomic:\n  notify:\n" + "".join(f"    {line}\n" for line in notify.splitlines())
        + "services:\n  web:\n    image: compose-atomic-testbed/busybox:1\n")
    return folder


def test_plugins_lists_it_with_its_hooks(plugin_site, tmp_path):
    result = cli("plugins", "--json", sites=[plugin_site], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    assert plugins == [{"name": "notify", "hooks": HOOKS, "builtin": False,
                        "package": "compose-atomic-notify", "version": "0.1.0"}]
    assert "notify-test" in cli("--help", sites=[plugin_site], cwd=tmp_path).stdout


def test_its_schema_key_is_accepted_and_a_misspelt_one_rejected(plugin_site, tmp_path):
    good = write_project(tmp_path / "good", "webhook: https://hooks.example.com/x\nevents: [rollback, deploy]")
    result = cli("check", sites=[plugin_site], cwd=good)
    assert result.returncode == 0, result.stderr
    bad = write_project(tmp_path / "bad", "webhok: https://hooks.example.com/x\nevents: [rolback]")
    result = cli("check", sites=[plugin_site], cwd=bad)
    assert result.returncode == 2
    assert 'compose.yaml:3: top-level x-atomic.notify.webhok: unknown key "webhok"' in result.stderr
    assert 'Did you mean "webhook"?' in result.stderr
    assert 'Did you mean "rollback"?' in result.stderr
    hostless = write_project(tmp_path / "hostless", "webhook: 'https://:8080/hook'")
    result = cli("check", sites=[plugin_site], cwd=hostless)
    assert result.returncode == 2 and "the URL has no host" in result.stderr
    # without the plugin, nobody owns the key
    result = cli("check", sites=[], cwd=good)
    assert result.returncode == 2 and 'unknown key "notify"' in result.stderr


def test_the_allow_list_excludes_it(plugin_site, tmp_path):
    for allow in ("", "some-other-plugin"):
        result = cli("plugins", "--json", sites=[plugin_site], cwd=tmp_path,
                     env={"COMPOSE_ATOMIC_LOAD_PLUGINS": allow})
        assert json.loads(result.stdout) == []
        schema = json.loads(cli("schema", sites=[plugin_site], cwd=tmp_path,
                                env={"COMPOSE_ATOMIC_LOAD_PLUGINS": allow}).stdout)
        assert "notify" not in schema["$defs"]["project"]["properties"]
    result = cli("plugins", "--json", sites=[plugin_site], cwd=tmp_path,
                 env={"COMPOSE_ATOMIC_LOAD_PLUGINS": "compose-atomic-notify"})
    assert [p["name"] for p in json.loads(result.stdout)] == ["notify"]


def test_a_plugin_that_raises_on_import_costs_one_warning_line(plugin_site, broken_site, tmp_path):
    result = cli("plugins", "--json", sites=[plugin_site, broken_site], cwd=tmp_path)
    assert result.returncode == 0
    assert [p["name"] for p in json.loads(result.stdout)] == ["notify"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: plugin 'broken' (compose-atomic-broken) failed to load")
    assert "RuntimeError: this plugin is broken on purpose" in lines[0]
    assert cli("check", "--help", sites=[broken_site], cwd=tmp_path).returncode == 0


def test_notify_test_posts_a_chat_message(plugin_site, receiver, tmp_path):
    url, received, state = receiver
    result = cli("notify-test", "--webhook", url, sites=[plugin_site], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert received[0]["path"] == "/hooks/T000/SECRET-TOKEN"
    assert received[0]["type"] == "application/json"
    message = received[0]["json"]
    assert message["text"] == message["content"] and "test message" in message["text"]
    assert "SECRET-TOKEN" not in result.stderr  # the token is never printed

    # from the project's x-atomic.notify, with the username set there
    project = write_project(tmp_path / "app", f"webhook: {url}\nusername: deploys")
    result = cli("notify-test", "--message", "hello", sites=[plugin_site], cwd=project)
    assert result.returncode == 0, result.stderr
    assert received[1]["json"] == {"text": "hello", "content": "hello", "username": "deploys"}

    # a webhook that refuses: exit 1, one clear line, no token
    state["status"] = 500
    result = cli("notify-test", "--webhook", url, sites=[plugin_site], cwd=tmp_path)
    assert result.returncode == 1
    assert "answered HTTP 500" in result.stderr and "SECRET-TOKEN" not in result.stderr
    assert "Traceback" not in result.stderr


def test_no_webhook_is_a_config_error(plugin_site, tmp_path):
    project = write_project(tmp_path / "app", "events: [rollback]")
    result = cli("notify-test", sites=[plugin_site], cwd=project, env={"COMPOSE_ATOMIC_NOTIFY_WEBHOOK": ""})
    assert result.returncode == 2 and "no webhook to send to" in result.stderr


@pytest.fixture
def notify_module(plugin_site):
    sys.path.insert(0, str(plugin_site))
    try:
        yield importlib.import_module("compose_atomic_notify")
    finally:
        sys.path.remove(str(plugin_site))
        sys.modules.pop("compose_atomic_notify", None)


def test_rollback_hook_posts_and_a_dead_webhook_only_warns(notify_module, receiver, capsys):
    url, received, _ = receiver
    project = Project(name="shop", options=ComposeOptions(),
                      config={"x-atomic": {"notify": {"webhook": url, "events": ["rollback"]}}})
    notify_module.on_rollback(project=project, service="web", reason="health check failed")
    notify_module.after_deploy(project=project, service="web", outcome="rolled back")  # not subscribed
    assert len(received) == 1
    assert "shop: the deploy of web was rolled back" in received[0]["json"]["text"]
    assert "health check failed" in received[0]["json"]["text"]
    dead = Project(name="shop", options=ComposeOptions(),
                   config={"x-atomic": {"notify": {"webhook": "http://127.0.0.1:9/x", "timeout": "2s"}}})
    notify_module.on_rollback(project=dead, service="web", reason="boom")  # must not raise
    assert "warning: notify: http://127.0.0.1 could not be reached" in capsys.readouterr().err
