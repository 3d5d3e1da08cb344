"""The Caddy configuration compose-atomic generates (pure functions; the real proxy is in test_deploy*)."""

from __future__ import annotations

from compose_atomic.proxy.caddy import RETRY_METHODS, Route, build_config, routes_from_config


def test_one_catch_all_route_on_plain_http_with_retries_that_never_replay_posts():
    config = build_config([Route("web", 3000, upstreams=["p-web-1:3000"])])
    assert config["admin"]["listen"] == "0.0.0.0:2019"
    server = config["apps"]["http"]["servers"]["atomic"]
    assert server["listen"] == [":80"] and server["automatic_https"] == {"disable": True}
    (route,) = server["routes"]
    assert "match" not in route
    handler = route["handle"][0]
    assert handler["@id"] == "ca_web" and handler["upstreams"] == [{"dial": "p-web-1:3000"}]
    lb = handler["load_balancing"]
    assert lb["try_duration"] == "5s"
    assert lb["retry_match"] == [{"method": RETRY_METHODS}] and "POST" not in RETRY_METHODS


def test_host_and_path_routes_come_before_the_catch_all_and_enable_https():
    routes = [Route("web", 80), Route("api", 8000, hosts=["api.example.com"]),
              Route("docs", 8080, path="/docs/")]
    server = build_config(routes)["apps"]["http"]["servers"]["atomic"]
    assert server["listen"] == [":80", ":443"] and "automatic_https" not in server
    assert [r["@id"] for r in server["routes"]] == ["ca_route_api", "ca_route_docs", "ca_route_web"]
    assert server["routes"][0]["match"] == [{"host": ["api.example.com"]}]
    assert server["routes"][1]["match"] == [{"path": ["/docs", "/docs/*"]}]


def test_saved_upstreams_are_read_back():
    config = build_config([Route("web", 3000, upstreams=["a:3000", "b:3000"]), Route("api", 1, upstreams=[])])
    assert routes_from_config(config) == {"web": ["a:3000", "b:3000"], "api": []}
    assert routes_from_config({}) == {}


def test_passive_health_only_while_there_is_a_fallback():
    single = Route("web", 3000, upstreams=["new:3000"]).to_caddy()["handle"][0]
    assert "health_checks" not in single
    pair = Route("web", 3000, upstreams=["new:3000", "old:3000"]).to_caddy()["handle"][0]
    assert pair["health_checks"] == {"passive": {"fail_duration": "1s", "max_fails": 1}}
    assert pair["load_balancing"]["selection_policy"] == {"policy": "first"}


def test_a_change_to_the_proxy_recreates_it_and_keeps_the_routes(project_name, tmp_path):
    import httpx
    import pytest

    from conftest import run_cli
    from test_deploy_support import app_service, free_port, wait_for_version, write_project

    first, second = free_port(), free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=first)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(first, "v1")
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=second)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "image or ports changed: recreating the proxy" in proc.stderr
    assert "Replacing" not in proc.stderr  # the app itself did not change
    wait_for_version(second, "v1")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{first}/cgi-bin/v", timeout=2)
