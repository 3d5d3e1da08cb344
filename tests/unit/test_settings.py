"""Defaults are written once (compose_atomic.settings.DEFAULTS) and agree with the JSON Schema."""

from __future__ import annotations

import pytest

from compose_atomic.config import base_schema
from compose_atomic.settings import DEFAULTS, deploy_settings, proxy_settings
from compose_atomic.project import ComposeOptions, Project


def schema_defaults() -> dict:
    defs = base_schema()["$defs"]
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            if "default" in node and path:
                found[".".join(path)] = node["default"]
            for key, value in (node.get("properties") or {}).items():
                walk(value, path + [key])

    walk(defs["project"], [])
    walk(defs["service"], [])
    return found


def test_every_schema_default_is_the_codes_default():
    assert schema_defaults() == {k: v for k, v in DEFAULTS.items() if k in schema_defaults()}
    missing = sorted(set(schema_defaults()) - set(DEFAULTS))
    assert not missing, f"defaults in the schema but not in compose_atomic.settings.DEFAULTS: {missing}"


def test_settings_are_parsed_once_into_typed_objects(tmp_path):
    config = {"services": {"web": {"x-atomic": {"route": {"port": 8080, "host": "a.example"},
                                                "health": {"timeout": "5s"}, "drain": "2s"}}},
              "x-atomic": {"proxy": {"ports": ["8080:80"]}}}
    project = Project(name="p", options=ComposeOptions(), config=config, working_dir=tmp_path)
    web = deploy_settings(project, "web")
    assert web.route.port == 8080 and web.route.hosts == ("a.example",)
    assert web.health.path == "/" and web.health.port == 8080 and web.health.timeout == 5.0
    assert (web.monitor, web.drain, web.strategy) == (10.0, 2.0, "start-first")
    proxy = proxy_settings(project)
    assert proxy.image == DEFAULTS["proxy.image"] and proxy.ports == ("8080:80",)


def test_a_write_hold_covers_the_routed_services_that_use_the_database(tmp_path):
    from compose_atomic.settings import write_hold_settings

    migrate = {"database": "db", "sql": "sql/*.sql", "hold_writes": "45s"}
    config = {"services": {
        "web": {"image": "app", "x-atomic": {"route": {"port": 80}, "migrate": migrate}},
        "api": {"image": "api", "depends_on": {"db": {"condition": "service_healthy"}},
                "x-atomic": {"route": {"port": 81}}},
        "other": {"image": "o", "x-atomic": {"route": {"port": 82}}},  # another database, or none
        "worker": {"image": "w", "x-atomic": {"migrate": {"database": "db", "sql": "x.sql"}}},  # no route
        "db": {"image": "postgres"}}}
    project = Project(name="p", options=ComposeOptions(), config=config, working_dir=tmp_path)
    hold = write_hold_settings(project, "web")
    assert hold is not None and hold.database == "db" and hold.timeout == 45.0
    assert set(hold.services) == {"web", "api"}
    assert write_hold_settings(project, "worker") is None  # not asked for
    forced = write_hold_settings(project, "worker", timeout=20.0)  # `up --hold-writes 20s`
    assert forced is not None and forced.timeout == 20.0 and set(forced.services) == {"web", "api"}
    assert write_hold_settings(project, "api", timeout=20.0) is None  # no migration, nothing to hold for
    assert write_hold_settings(project, "web", timeout=20.0).timeout == 20.0  # the flag wins


@pytest.mark.parametrize("text, says", [("0s", "--hold-writes: must be more than 0s"),
                                        ("soon", "--hold-writes: 'soon' is not a duration")])
def test_a_duration_option_that_is_not_a_positive_duration_is_a_usage_error(text, says):
    from compose_atomic.durations import parse_positive_option
    from compose_atomic.errors import EXIT_USAGE, UsageError

    with pytest.raises(UsageError) as raised:
        parse_positive_option("--hold-writes", text)
    assert raised.value.exit_code == EXIT_USAGE and str(raised.value).startswith(says)
    assert parse_positive_option("--timeout", "1m30s") == 90.0
