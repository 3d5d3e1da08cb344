"""x-atomic validation: the schema, the messages, the durations (pure functions)."""

from __future__ import annotations

import pytest

from compose_atomic.config import full_schema, schema_problems
from compose_atomic.durations import format_duration, parse_duration


def problems(service_annotation=None, project_annotation=None):
    config = {"services": {"web": {"image": "x"}}}
    if service_annotation is not None:
        config["services"]["web"]["x-atomic"] = service_annotation
    if project_annotation is not None:
        config["x-atomic"] = project_annotation
    return [str(p) for p in schema_problems(config, full_schema())]


@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("1.5s", 1.5), ("2h45m", 9900),
    ("100us", 0.0001),
])
def test_durations_in_compose_form(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5 minutes", "1d", "s", "1m30", "-1s", "1s2"])
def test_bad_durations_say_what_is_allowed(text):
    with pytest.raises(ValueError, match="30s, 1m30s or 500ms"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(0.31) == "0.3s"
    assert format_duration(65) == "1m05s"


def test_a_valid_annotation_has_no_problem():
    assert problems({"route": {"port": 3000, "host": "api.example.com"}, "health": {"path": "/healthz",
                     "timeout": "60s"}, "monitor": "10s", "drain": "30s", "strategy": "start-first"},
                    {"proxy": {"image": "caddy:2.8-alpine", "ports": ["80:80"]}}) == []


# Ten kinds of bad input, each with the message a user needs.
BAD = [
    ("unknown key", {"rout": {"port": 1}}, 'unknown key "rout"', 'Did you mean "route"?'),
    ("nested unknown key", {"route": {"prot": 80}}, 'x-atomic.route.prot: unknown key "prot"', 'Did you mean "port"?'),
    ("wrong type", {"route": {"port": "eighty"}}, "x-atomic.route.port: expected a whole number", '"eighty"'),
    ("bad duration", {"monitor": "10 seconds"}, "x-atomic.monitor", "not a duration"),
    ("duration without unit", {"drain": 30}, "x-atomic.drain: expected a string", "needs a unit"),
    ("bad enum", {"strategy": "blue-green"}, "x-atomic.strategy", "Use one of: start-first, stop-first"),
    ("misspelt enum", {"strategy": "stop-frist"}, "x-atomic.strategy", 'Did you mean "stop-first"?'),
    ("missing required", {"route": {"host": "a.example"}}, "x-atomic.route", 'the key "port" is required'),
    ("out of range", {"route": {"port": 70000}}, "x-atomic.route.port", "at most 65535"),
    ("not a mapping", ["route"], "x-atomic", "expected a mapping, found a list"),
    ("both command and sql", {"migrate": {"database": "db", "command": "x", "sql": "m/*.sql"}},
     "x-atomic.migrate", "exactly one of: command, sql"),
    ("bad path", {"health": {"path": "healthz"}}, "x-atomic.health.path", "must match ^/"),
]


@pytest.mark.parametrize("kind,annotation,where,what", BAD, ids=[b[0] for b in BAD])
def test_bad_service_annotations_are_explained(kind, annotation, where, what):
    found = problems(annotation)
    assert len(found) >= 1
    text = "\n".join(found)
    assert 'service "web"' in text
    assert where in text and what in text, text


def test_bad_top_level_annotation_is_explained():
    found = problems(project_annotation={"proxy": {"image": "caddy", "port": ["80:80"]}})
    assert found == ['top-level x-atomic.proxy.port: unknown key "port". Allowed here: image, ports, '
                     'networks. Did you mean "ports"?']


def test_a_proxy_port_that_is_not_a_port_is_explained():
    found = problems(project_annotation={"proxy": {"ports": ["127.0.0.1:8080:80", 443, "eighty:80"]}})
    assert found == ['top-level x-atomic.proxy.ports.2: "eighty:80" is not a port. Use Compose\'s short syntax, '
                     'like "80:80", "127.0.0.1:8080:80" or 443.']


def test_plugins_can_declare_keys():
    from compose_atomic import hookimpl
    from compose_atomic.plugins import pm

    class Plugin:
        __name__ = "test-plugin"

        @hookimpl
        def register_config_schema(self, register):
            register("notify", {"type": "object", "additionalProperties": False,
                                "properties": {"channel": {"type": "string"}}})

    assert problems({"notify": {"channel": "#ops"}}) != []
    pm.register(Plugin(), name="undo-test-plugin")
    try:
        assert problems({"notify": {"channel": "#ops"}}) == []
        assert 'unknown key "chanel"' in problems({"notify": {"chanel": "#ops"}})[0]
    finally:
        pm.unregister(name="undo-test-plugin")


def test_routes_that_match_the_same_host_and_path_are_rejected():
    from compose_atomic.config import route_conflicts

    assert route_conflicts({"web": {"port": 80}, "api": {"port": 8000, "host": "api.example.com"},
                            "docs": {"port": 80, "path": "/docs"}, "www": {"port": 80, "host": ["a.example", "b.example"]},
                            "blog": {"port": 80, "host": "blog.example.com", "path": "/blog/"}}) == []
    (problem,) = route_conflicts({"auth": {"port": 9999}, "kong": {"port": 8000}})
    assert (problem.service, problem.key_path) == ("kong", ("route",))
    assert 'same requests as service "auth": every host (neither route has route.host), every path' in str(problem)
    (problem,) = route_conflicts({"a": {"port": 1, "host": ["x.example", "Shop.Example."]},
                                  "b": {"port": 2, "host": "shop.example", "path": "/"}})
    assert 'service "b"' in str(problem) and 'host "shop.example", every path' in str(problem)
    (problem,) = route_conflicts({"a": {"port": 1, "path": "/api/"}, "b": {"port": 2, "path": "/api"}})
    assert "path /api" in str(problem)
    assert len(route_conflicts({"a": {"port": 1}, "b": {"port": 2}, "c": {"port": 3}})) == 2
