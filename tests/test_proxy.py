"""The Caddy configuration compose-atomic generates (pure functions; the real proxy is in test_deploy*)."""

from __future__ import annotations

import pytest

from compose_atomic.proxy.caddy import (RETRY_METHODS, SWITCH_SOCKET, Route, build_config, build_edge_config,
                                        edge_listeners, routes_from_config)


def test_one_catch_all_route_on_plain_http_with_retries_that_never_replay_posts():
    config = build_config([Route("web", 3000, upstreams=["p-web-1:3000"])])
    assert config["admin"]["listen"] == "0.0.0.0:2019"
    server = config["apps"]["http"]["servers"]["atomic"]
    # The switch listens on a unix socket that only the edge reaches.
    assert server["listen"] == ["unix//run/compose-atomic/switch-a.sock"]
    assert server["automatic_https"] == {"disable": True}
    (route,) = server["routes"]
    assert "match" not in route
    handler = route["handle"][0]
    assert handler["@id"] == "ca_web" and handler["upstreams"] == [{"dial": "p-web-1:3000"}]
    lb = handler["load_balancing"]
    assert lb["try_duration"] == "5s"
    assert lb["retry_match"] == [{"method": RETRY_METHODS}] and "POST" not in RETRY_METHODS


def test_host_and_path_routes_come_before_the_catch_all_and_the_edge_enables_https():
    routes = [Route("web", 80), Route("api", 8000, hosts=["api.example.com"]),
              Route("docs", 8080, path="/docs/")]
    server = build_config(routes)["apps"]["http"]["servers"]["atomic"]
    assert [r["@id"] for r in server["routes"]] == ["ca_route_api", "ca_route_docs", "ca_route_web"]
    assert server["routes"][0]["match"] == [{"host": ["api.example.com"]}]
    assert server["routes"][1]["match"] == [{"path": ["/docs", "/docs/*"]}]
    edge = build_edge_config(routes, ["80:80", "443:443"])
    assert edge["admin"] == {"disabled": True}
    front = edge["apps"]["http"]["servers"]["edge"]
    assert front["listen"] == [":80", ":443"] and "automatic_https" not in front
    assert "http_port" not in edge["apps"]["http"]
    assert front["routes"][0]["match"] == [{"host": ["api.example.com"]}]  # certificates for these hosts
    assert "match" not in front["routes"][1]


def test_the_edge_never_keeps_an_idle_connection_to_the_switch():
    (route,) = build_edge_config([Route("web", 80)])["apps"]["http"]["servers"]["edge"]["routes"]
    forward = route["handle"][0]
    assert forward["upstreams"] == [{"dial": f"unix/{SWITCH_SOCKET}"}]
    assert forward["transport"]["keep_alive"] == {"enabled": False}
    assert "retry_match" not in forward["load_balancing"]  # only dial errors: nothing was sent yet
    # The switch keeps the client's address and scheme as the edge saw them.
    handler = Route("web", 80).to_caddy()["handle"][0]
    assert handler["headers"]["request"]["set"]["X-Forwarded-For"] == ["{http.request.header.X-Forwarded-For}"]


def test_compose_port_syntax_becomes_the_edges_listen_addresses():
    assert edge_listeners(["80:80", "127.0.0.1:8080:80", "[::1]:8443:443", "443:443/udp", 9000,
                           {"target": 443, "published": "4443", "host_ip": "127.0.0.1"}]) == [
        (":80", 80), ("127.0.0.1:8080", 80), ("[::1]:8443", 443), (":9000", 9000), ("127.0.0.1:4443", 443)]
    edge = build_edge_config([Route("api", 80, hosts=["api.example.com"])], ["8080:80", "8443:443"])
    assert edge["apps"]["http"]["http_port"] == 8080 and edge["apps"]["http"]["https_port"] == 8443


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


def test_new_proxy_ports_take_over_and_keep_the_routes(project_name, tmp_path):
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
    assert "took over beside the old one" in proc.stderr
    assert "Replacing" not in proc.stderr  # the app itself did not change
    wait_for_version(second, "v1")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{first}/cgi-bin/v", timeout=2)


@pytest.mark.parametrize("change", ["retagged", "2.6 to 2.11", "2.11 to 2.11 without a shell"])
def test_a_new_proxy_image_takes_over_the_sockets_without_a_failed_request(change, project_name, tmp_path, request):
    from conftest import IMAGE_CADDY, IMAGE_CADDY_NOSHELL, IMAGE_CADDY_OLD, docker, run_cli
    from test_deploy_support import Hammer, app_service, free_port, wait_for_version, write_project

    port = free_port()
    if change == "retagged":
        old = IMAGE_CADDY
        tag = f"compose-atomic-testbed/caddy:{project_name}"  # another name for the same Caddy: a new image to Compose
        docker("tag", IMAGE_CADDY, tag)
        request.addfinalizer(lambda: docker("rmi", tag, check=False))
    elif change == "2.6 to 2.11":  # the upgrade users make: Debian's 2.6 (no shell) to 2.11 (with one)
        old, tag = IMAGE_CADDY_OLD, IMAGE_CADDY
    else:  # an image that holds only the caddy binary: driven through the admin API alone
        old, tag = IMAGE_CADDY, IMAGE_CADDY_NOSHELL

    def proxy(image: str) -> dict:
        return {"proxy": {"image": image, "ports": [f"127.0.0.1:{port}:80"]}}

    write_project(tmp_path, {"web": app_service("v1")}, x_atomic=proxy(old))
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    write_project(tmp_path, {"web": app_service("v1")}, x_atomic=proxy(tag))
    with Hammer(port) as load:
        proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "took over beside the old one" in proc.stderr and "Replacing" not in proc.stderr
    assert load.failures == [], load.failures
    assert load.long_done >= 1 and load.ok > 20
    edge = docker("inspect", "--format", "{{.Config.Image}}", f"{project_name}-atomic-proxy").stdout.strip()
    assert edge == tag


def test_replicas_take_turns_and_a_failed_one_is_skipped():
    handler = Route("web", 80, upstreams=["10.0.0.2:80", "10.0.0.3:80"], balance=True).to_caddy()["handle"][0]
    assert handler["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
    assert handler["health_checks"]["passive"]["max_fails"] == 1
