"""The Caddy configuration compose-atomic generates (pure functions; the real proxy is in test_deploy*)."""

from __future__ import annotations

import pytest

from compose_atomic.proxy.caddy import (DIAL_TIMEOUT, RETRY_METHODS, SWITCH_SOCKET, Route, build_config, build_edge_config,
                                        edge_listeners, routes_from_config)


def test_one_catch_all_route_on_plain_http_with_retries_that_never_replay_posts():
    config = build_config([Route("web", 3000, upstreams=["p-web-1:3000"])])
    # The admin API is a unix socket beside the switch's, reached by no network.
    assert config["admin"]["listen"] == "unix//run/compose-atomic/admin-a.sock"
    server = config["apps"]["http"]["servers"]["atomic"]
    # The switch listens on a unix socket that only the edge reaches.
    assert server["listen"] == ["unix//run/compose-atomic/switch-a.sock"]
    assert server["automatic_https"] == {"disable": True}
    (route,) = server["routes"]
    assert "match" not in route
    handler = route["handle"][1]
    assert handler["@id"] == "ca_web" and handler["upstreams"] == [{"dial": "p-web-1:3000"}]
    lb = handler["load_balancing"]
    assert lb["try_duration"] == "200ms"  # one container: a short look, then 503 (see test_engine_restart)
    assert handler["transport"]["dial_timeout"] == DIAL_TIMEOUT == "500ms"
    assert lb["retry_match"] == [{"method": RETRY_METHODS}] and "POST" not in RETRY_METHODS
    # Two containers (a switch): requests are held while one fails and the other answers.
    pair = Route("web", 3000, upstreams=["10.0.0.2:3000", "p-web-2:3000", "10.0.0.3:3000", "p-web-1:3000"])
    assert pair.handler()["load_balancing"]["try_duration"] == "5s"


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
    handler = Route("web", 80, upstreams=["p-web-1:80"]).to_caddy()["handle"][1]
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
    single = Route("web", 3000, upstreams=["new:3000"]).to_caddy()["handle"][1]
    assert "health_checks" not in single
    pair = Route("web", 3000, upstreams=["new:3000", "old:3000"]).to_caddy()["handle"][1]
    assert pair["health_checks"] == {"passive": {"fail_duration": "10s", "max_fails": 1}}
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
    from test_deploy_support import Hammer, app_service, free_port, proxy_errors, wait_for_version, write_project

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
    assert load.failures == [], (load.failures, proxy_errors(project_name, tmp_path))
    assert load.long_done >= 1 and load.ok > 20
    edge = docker("inspect", "--format", "{{.Config.Image}}", f"{project_name}-atomic-proxy").stdout.strip()
    assert edge == tag


def test_replicas_take_turns_and_a_failed_one_is_skipped():
    handler = Route("web", 80, upstreams=["10.0.0.2:80", "10.0.0.3:80"], balance=True).to_caddy()["handle"][1]
    assert handler["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
    assert handler["health_checks"]["passive"]["max_fails"] == 1


# ---- nothing on a container network can read or change the proxy's configuration ----------


def listening_tcp(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses a process listens on, from /proc (its own sockets only, any namespace)."""
    import ipaddress
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = local.split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((str(ipaddress.ip_address(raw)), int(hexport, 16)))
    return found


def probe(container: str, ip: str, port: int) -> list[str]:
    """What an app container gets from ip:port when it asks for the config and tries to replace it."""
    import subprocess

    host = f"[{ip}]" if ":" in ip else ip
    body = '{"apps":{}}'
    requests = [
        f"GET /config/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n",
        f"GET /config/ HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n",
        f"GET /reverse_proxy/upstreams HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n",
        (f"POST /load HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"),
        (f"POST /load HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"),
    ]
    answers = []
    for req in requests:
        # stdin stays open until the answer is in: a half-closed request is one Caddy cancels.
        proc = subprocess.run(["docker", "exec", "-e", f"REQ={req}", container, "sh", "-c",
                               f'{{ printf "%s" "$REQ"; sleep 1; }} | nc -w 3 {ip} {port}'],
                              capture_output=True, text=True, timeout=30)
        answers.append(proc.stdout)
    return answers


def scan_targets(listening: set[tuple[str, int]], reachable_ips: list[str]) -> set[tuple[str, int]]:
    """Where an app container can try each listening socket: wildcards on every reachable address."""
    targets = set()
    for address, port in listening:
        if address in ("0.0.0.0", "::"):
            targets |= {(ip, port) for ip in reachable_ips}
        elif address in reachable_ips:
            targets.add((address, port))
        # else: loopback or another interface of the host, not on a container network
    return targets


def assert_no_admin_answers(container: str, targets: set[tuple[str, int]]) -> None:
    leaks = []
    for ip, port in sorted(targets):
        for answer in probe(container, ip, port):
            status = answer.split("\r\n", 1)[0]
            if '"apps"' in answer or '"admin"' in answer or '"address"' in answer or status.startswith("HTTP/1.1 200"):
                leaks.append(f"{ip}:{port}: {status} {answer[-200:]!r}")
    assert leaks == [], leaks


def test_no_container_on_the_projects_networks_can_reach_the_proxys_admin_api(project_name, tmp_path):
    """An app container (a compromised app, an SSRF bug) scans every address and port of the
    edge and the switch: nothing reads or changes the routes, and the site keeps serving."""
    import json

    import httpx

    from conftest import IMAGE_CADDY, docker, run_cli
    from test_deploy_support import app_service, free_port, get_version, wait_for_version, write_project

    port, port2 = free_port(), free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    network = f"{project_name}_default"
    gateway = json.loads(docker("network", "inspect", network).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    # The edge also listens on the host's address on that network, the one address of the host an
    # app container reaches: the scan covers the edge's public sockets as well as the switch.
    x_atomic = {"proxy": {"image": IMAGE_CADDY, "ports": [f"127.0.0.1:{port}:80", f"{gateway}:{port2}:80"]}}
    write_project(tmp_path, {"web": app_service("v1")}, x_atomic=x_atomic)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    app = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project_name}",
                 "--filter", "label=com.docker.compose.service=web").stdout.split()[0]
    targets = set()
    for name in (f"{project_name}-atomic-proxy", f"{project_name}-atomic-proxy-switch"):
        info = json.loads(docker("inspect", name).stdout)[0]
        ips = [n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
        reachable = ips if ips else [gateway]  # the edge is in the host's namespace
        listening = listening_tcp(info["State"]["Pid"])
        targets |= scan_targets(listening, reachable) | {(ip, 2019) for ip in reachable}
    assert (gateway, port2) in targets  # the edge's public socket is among them (it answers the app, not Caddy)
    assert_no_admin_answers(app, targets)
    assert get_version(port) == "v1"
    assert httpx.get(f"http://{gateway}:{port2}/cgi-bin/v", timeout=5).text.strip() == "v1"
    # The switch's admin API is a unix socket only root on the host reaches; no host TCP port either.
    switch = json.loads(docker("inspect", f"{project_name}-atomic-proxy-switch").stdout)[0]
    assert not any(switch["NetworkSettings"]["Ports"].values())
    run_dir = tmp_path / ".compose-atomic" / "proxy" / "run"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    # And compose-atomic still drives it: a new version deploys through that socket.
    write_project(tmp_path, {"web": app_service("v2")}, x_atomic=x_atomic)
    proc = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wait_for_version(port, "v2")



def test_a_route_with_nothing_to_send_to_answers_503_at_once_with_retry_after():
    from compose_atomic.proxy.caddy import containers_behind, error_routes

    handler = Route("web", 80).handler()
    assert handler["handler"] == "static_response" and handler["status_code"] == 503
    assert handler["@id"] == "ca_web"  # a deploy PATCHes it into a reverse_proxy
    assert handler["headers"]["Retry-After"] == ["5"]
    # A failed dial or no upstream available becomes a 503 with Retry-After on both Caddys;
    # any other error keeps its status.
    first, rest = error_routes()["routes"]
    assert first["handle"][0]["status_code"] == 503
    assert rest["handle"][0]["status_code"] == "{http.error.status_code}"
    assert build_config([Route("web", 80)])["apps"]["http"]["servers"]["atomic"]["errors"] == error_routes(tagged=True)
    assert build_edge_config([Route("web", 80)])["apps"]["http"]["servers"]["edge"]["errors"] == error_routes()
    assert containers_behind(["10.0.0.2:80", "p-web-1:80"]) == 1
    assert containers_behind(["10.0.0.2:80", "p-web-2:80", "10.0.0.3:80", "p-web-1:80"]) == 2
    assert containers_behind(["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]) == 3
    assert containers_behind([]) == 0


def test_routed_services_that_nothing_restarts_are_listed_for_up_and_init():
    from compose_atomic.restarts import restart_policy, restart_warning, routed_without_restart

    route = {"x-atomic": {"route": {"port": 80}}}
    services = {
        "web": {**route},
        "api": {**route, "restart": "unless-stopped"},
        "admin": {**route, "restart": "on-failure"},  # not restarted if it exits 0 on the engine's SIGTERM
        "swarmish": {**route, "deploy": {"restart_policy": {"condition": "any"}}},
        "off": {**route, "restart": "no"},
        "worker": {},  # not routed: not the proxy's business
    }
    assert routed_without_restart(services) == ["admin", "off", "web"]
    assert restart_policy(services["swarmish"]) == "always" and restart_policy(services["off"]) is None
    message = restart_warning("web", services)
    assert message.startswith("no restart policy") and "restart: unless-stopped" in message
    assert restart_warning("admin", services).startswith("restart: on-failure")


def test_maintenance_mode_answers_503_with_a_page_while_the_app_stays_healthy(project_name, tmp_path):
    import httpx

    from conftest import docker, run_cli
    from test_deploy_support import app_service, free_port, wait_for_version, write_project

    port = free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    bad = run_cli("-p", project_name, "maintenance", "on", "nosuch", cwd=tmp_path)
    assert bad.returncode == 2 and "nosuch is not a service" in bad.stderr and "Traceback" not in bad.stderr

    proc = run_cli("-p", project_name, "maintenance", "on", "web", "--message", "Back at {noon} <b>", "--retry-after",
                   "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=5)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert "Back at &#123;noon&#125; &lt;b&gt;" in answer.text  # escaped: no HTML, no Caddy placeholder
    assert answer.headers["content-type"].startswith("text/html")
    health = docker("inspect", "--format", "{{.State.Health.Status}}", f"{project_name}-web-1").stdout.strip()
    assert health == "healthy"  # the app is untouched; only its route answers the page

    # A deploy meanwhile is refused before anything changes, unless asked for: then the new
    # version is gated and routed behind the page, which stays up.
    write_project(tmp_path, {"web": app_service("v2")}, proxy_port=port)
    refused = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert refused.returncode == 2 and "web: the route is in maintenance" in refused.stderr, refused.stderr
    assert "--allow-maintenance" in refused.stderr and "Traceback" not in refused.stderr
    running = docker("ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={project_name}")
    assert running.stdout.split().count(f"{project_name}-web-1") == 1 and "-web-2" not in running.stdout
    proc = run_cli("-p", project_name, "up", "--allow-maintenance", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=5).status_code == 503

    # The user's own page, as it is (CSS braces and all), and files it cannot take.
    page = tmp_path / "down.html"
    page.write_text("<html><style>body { color: #333 }</style><p>Back soon {http.request.uri}</p></html>\n")
    proc = run_cli("-p", project_name, "maintenance", "on", "web", "--page", str(page), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=5)
    assert answer.status_code == 503 and answer.text == page.read_text(), answer.text
    assert answer.headers["content-type"].startswith("text/html") and "retry-after" in answer.headers
    (tmp_path / "big.html").write_bytes(b"x" * (300 * 1024))
    for bad, said in ((tmp_path / "none.html", "cannot read it"), (tmp_path / "big.html", "larger than 256 KiB")):
        proc = run_cli("-p", project_name, "maintenance", "on", "web", "--page", str(bad), cwd=tmp_path)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    both = run_cli("-p", project_name, "maintenance", "on", "web", "--page", str(page), "--message", "x", cwd=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr, both.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=5).text == page.read_text()
    # The app behind the page saw none of those requests: the switch's log names no container for them.
    import json

    from compose_atomic.proxy.caddy import UPSTREAM_TAG
    answered = [json.loads(line) for log in (tmp_path / ".compose-atomic" / "proxy" / "run").glob("receipt-*.log")
                for line in log.read_text().splitlines() if '"status":503' in line]
    assert len(answered) >= 4 and not [a for a in answered if UPSTREAM_TAG in a.get("resp_headers", {})], answered

    proc = run_cli("-p", project_name, "maintenance", "off", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    wait_for_version(port, "v2", timeout=10)


def test_pause_holds_requests_at_the_proxy_and_resume_lets_them_through(project_name, tmp_path):
    import threading
    import time

    import httpx

    from conftest import run_cli
    from test_deploy_support import app_service, free_port, wait_for_version, write_project

    port = free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    proc = run_cli("-p", project_name, "pause", "web", "--timeout", "30s", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Paused" in proc.stderr and "with a body" not in proc.stderr, proc.stderr
    answers: list[tuple[str, int, float]] = []
    started = time.monotonic()

    def client(method: str) -> None:
        r = httpx.request(method, f"http://127.0.0.1:{port}/cgi-bin/v", content=b"x=1" if method == "POST" else None,
                          timeout=40)
        answers.append((method, r.status_code, time.monotonic() - started))

    # Requests with a body too: Caddy 2.7 and later hold them with the body buffered.
    threads = [threading.Thread(target=client, args=(m,)) for m in ("GET", "HEAD", "POST") * 3]
    for t in threads:
        t.start()
    time.sleep(3)
    assert answers == []  # held, not failed
    resumed = time.monotonic() - started
    proc = run_cli("-p", project_name, "resume", "web", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for t in threads:
        t.join(timeout=40)
    assert sorted(a[:2] for a in answers) == [("GET", 200)] * 3 + [("HEAD", 200)] * 3 + [("POST", 200)] * 3, answers
    assert all(a[2] > resumed for a in answers)
    assert httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=5).text.strip() == "v1"

    # Held past --timeout: a 503 with Retry-After, not a hang.
    assert run_cli("-p", project_name, "pause", "--timeout", "1s", cwd=tmp_path).returncode == 0
    start = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v", timeout=20)
    assert r.status_code == 503 and r.headers["retry-after"] and 0.9 < time.monotonic() - start < 5
    assert run_cli("-p", project_name, "resume", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1", timeout=5)


def test_pause_on_caddy_2_6_holds_reads_and_says_that_a_request_with_a_body_gets_503(project_name, tmp_path):
    """Caddy 2.6 cannot hold a body (no request_buffers): `pause` says so, and a POST is refused at
    once by the switch (nothing reached the app), while a GET waits for `resume`. The refusal is
    503 with Retry-After, or 502 when the POST's body was still on its way as the switch answered
    (the edge's write of it fails: docs/deploy.md, Known limits)."""
    import json
    import threading
    import time

    import httpx

    from conftest import IMAGE_CADDY_OLD, docker, run_cli
    from test_deploy_support import app_service, free_port, proxy_errors, wait_for_version, write_project

    port = free_port()
    x_atomic = {"proxy": {"image": IMAGE_CADDY_OLD, "ports": [f"127.0.0.1:{port}:80"]}}
    write_project(tmp_path, {"web": app_service("v1")}, x_atomic=x_atomic)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    proc = run_cli("-p", project_name, "pause", "web", "--timeout", "30s", cwd=tmp_path)
    assert proc.returncode == 0 and "requests with a body get 503" in proc.stderr, proc.stderr
    got: list[int] = []
    held = threading.Thread(target=lambda: got.append(httpx.get(f"http://127.0.0.1:{port}/cgi-bin/v",
                                                                timeout=40).status_code))
    held.start()
    started = time.time()
    post = httpx.post(f"http://127.0.0.1:{port}/cgi-bin/v", content=b"x=1", timeout=10)
    if post.status_code == 502:
        edge = docker("logs", f"{project_name}-atomic-proxy", check=False).stderr
        assert "broken pipe" in edge, (post.status_code, proxy_errors(project_name, tmp_path))
    else:
        assert post.status_code == 503 and post.headers["retry-after"], (post.status_code, proxy_errors(project_name, tmp_path))
    # Either way the switch refused it itself (a failed dial of the refusal socket), not the app.
    log = (tmp_path / ".compose-atomic" / "proxy" / "run" / "receipt-a.log").read_text().splitlines()
    answered = [json.loads(line) for line in log if '"handled request"' in line]
    assert [(e["status"], e["resp_headers"]["X-Compose-Atomic-Upstream"][0].rsplit("/", 1)[-1])
            for e in answered if e["ts"] >= started] == [(503, "paused-web.refuse")], answered[-3:]
    assert got == []
    assert run_cli("-p", project_name, "resume", "web", cwd=tmp_path).returncode == 0
    held.join(timeout=40)
    assert got == [200]


def test_a_paused_route_holds_bodiless_requests_and_lets_the_held_ones_through():
    from compose_atomic.proxy.caddy import HELD_HEADER, HELD_METHODS

    route = Route("web", 80, upstreams=["10.0.0.2:80", "p-web-1:80"], paused={"timeout": 5})
    _tag, first, proxy = route.to_caddy()["handle"]
    assert proxy["@id"] == "ca_web"  # the deploy's handler stays, with its upstreams
    held, refused = first["routes"]
    assert held["match"][0]["method"] == HELD_METHODS and "POST" not in HELD_METHODS
    assert held["match"][0]["not"] == [{"header": {HELD_HEADER: ["1"]}}]  # held once, not twice
    hold = held["handle"][0]
    assert hold["load_balancing"]["try_duration"] == "5000ms"
    assert hold["headers"]["request"]["set"][HELD_HEADER] == ["1"]
    assert refused["handle"][0]["handler"] == "reverse_proxy"  # a failed dial: the body is read, then 503
    edge = build_edge_config([route])["apps"]["http"]["servers"]["edge"]["routes"][-1]["handle"][0]
    assert edge["headers"]["request"]["delete"] == [HELD_HEADER]  # clients cannot skip a pause
    assert routes_from_config(build_config([route])) == {"web": ["10.0.0.2:80", "p-web-1:80"]}


def test_a_write_hold_holds_every_request_with_its_body_buffered():
    from compose_atomic.proxy.caddy import ALL_METHODS, HELD_HEADER

    route = Route("web", 80, upstreams=["10.0.0.2:80"], paused={"timeout": 90, "writes": True})
    _tag, first, proxy = route.to_caddy()["handle"]  # the receipt's tag comes first
    assert proxy["@id"] == "ca_web"
    (held,) = first["routes"]  # nothing is refused: every method waits
    assert held["match"] == [{"not": [{"header": {HELD_HEADER: ["1"]}}]}]
    hold = held["handle"][0]
    assert hold["request_buffers"] > 0  # the body is read first, so each retried dial sends it whole
    assert hold["load_balancing"]["retry_match"] == [{"method": ALL_METHODS}] and "POST" in ALL_METHODS
    assert hold["load_balancing"]["try_duration"] == "90000ms"


def test_a_write_hold_is_refused_on_a_caddy_that_cannot_hold_a_body():
    from compose_atomic.proxy.caddy import parse_caddy_version, write_hold_refusal

    assert parse_caddy_version("v2.11.7 h1:yj0Y4fYZ=") == (2, 11, 7)  # what the test bed's images print
    assert parse_caddy_version("2.6.2\n") == (2, 6, 2) and parse_caddy_version("v2.12") == (2, 12, 0)
    assert write_hold_refusal((2, 11), "caddy:2.11", "p-atomic-proxy-switch") is None
    refusal = write_hold_refusal((2, 6), "caddy:2.6", "p-atomic-proxy-switch")
    assert "Caddy 2.6 (caddy:2.6)" in refusal and "2.7 or later" in refusal
    assert "could not be read" in write_hold_refusal(None, "caddy:2", "p-atomic-proxy-switch")


def test_an_admin_socket_in_a_deep_state_directory_is_still_reached(tmp_path):
    """connect(2) takes at most 107 bytes of path: a project deep in the tree (or pytest's own
    temporary folders) puts the switch's admin socket further away than that."""
    import socket

    from compose_atomic.proxy.caddy import reachable

    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    with reachable(folder / "admin-a.sock") as path:  # binding takes the same short path
        server.bind(path)
    server.listen()
    with reachable(folder / "admin-a.sock") as path, socket.socket(socket.AF_UNIX) as client:
        assert len(path) < 100
        client.connect(path)
    server.close()


def test_the_edge_logs_why_it_could_not_forward_a_request_without_the_request(project_name, tmp_path):
    """The edge's error routes answer (a 503 here: no switch to dial), and Caddy would log the
    reason only at DEBUG: the edge's own error log says it, on its stderr, with no header, cookie
    or path of the request."""
    import json
    import time

    import httpx

    from conftest import IMAGE_CADDY, docker
    from test_deploy_support import free_port

    config = build_edge_config([Route("web", 80)])
    server = config["apps"]["http"]["servers"]["edge"]
    server["listen"] = [":8080"]
    server["routes"][-1]["handle"][0]["load_balancing"]["try_duration"] = "200ms"  # not the 10 s of a restart
    (tmp_path / "edge.json").write_text(json.dumps(config))
    port, name = free_port(), f"{project_name}-edge-probe"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{tmp_path}:/cfg:ro",
           IMAGE_CADDY, "caddy", "run", "--config", "/cfg/edge.json")
    try:
        for _ in range(100):
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/secret-path?token=t0ps3cret", timeout=5,
                                   headers={"Authorization": "Bearer t0ps3cret", "Cookie": "session=t0ps3cret"})
                break
            except httpx.TransportError:  # not listening yet
                time.sleep(0.1)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        logs = docker("logs", name)
        errors = [json.loads(line) for line in (logs.stdout + logs.stderr).splitlines()
                  if '"http.log.error"' in line]
        assert errors and errors[0]["msg"].startswith("dial unix"), errors
        assert "t0ps3cret" not in logs.stdout + logs.stderr and "secret-path" not in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)


def test_no_post_is_lost_while_the_switchs_configuration_changes_again_and_again(project_name, tmp_path):
    """Each change restarts the switch's HTTP server, and Go's graceful shutdown closes a connection
    it accepted but has not read (golang/go#75591): the edge got EOF for a POST nobody handled and
    answered 502 (16 POSTs in 300 changes under load, measured on this Caddy without the quiesce
    in ``CaddyProxy._change``). Here: POSTs without a pause, 60 changes, none lost."""
    import os
    import threading

    import httpx

    from compose_atomic.deploy.routing import make_proxy, proxy_networks
    from compose_atomic.proxy.caddy import QUIET_TARGET
    from compose_atomic.project import ComposeOptions, load_project
    from conftest import run_cli
    from test_deploy_support import app_service, free_port, proxy_errors, wait_for_version, write_project

    port = free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    project = load_project(ComposeOptions(project_name=project_name, project_directory=str(tmp_path)))
    proxy, networks = make_proxy(project), proxy_networks(project)
    proxy.restore_saved()
    dials = proxy.routes["web"].upstreams

    stop, failures, answered = threading.Event(), [], []

    def post() -> None:
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"http://127.0.0.1:{port}/cgi-bin/v", content=b"x=1")
                    (answered if r.status_code == 200 else failures).append(r.status_code)
                except httpx.HTTPError as exc:
                    failures.append(type(exc).__name__)

    threads = [threading.Thread(target=post, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(60):  # a real change each time: a leaving upstream that no request reaches
            proxy.set_upstreams("web", dials, networks, draining=["192.0.2.1:8080"] if i % 2 == 0 else [])
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    assert failures == [], (failures, proxy_errors(project_name, tmp_path))
    assert len(answered) > 60
    print(f"{len(answered)} POSTs answered during 60 changes of the switch's configuration, 0 failed")
    link = proxy.run_dir / "switch.sock"
    assert os.readlink(link) == f"switch-{proxy.slot}.sock"

    # A command killed during a change leaves the edge's socket pointing nowhere: the next one
    # finds the serving switch by its label and points it back.
    link.unlink()
    os.symlink(QUIET_TARGET, link)
    again = make_proxy(project)
    again.restore_saved()
    assert again.slot == proxy.slot
    again.set_upstreams("web", dials, networks)
    assert os.readlink(link) == f"switch-{proxy.slot}.sock"
    assert httpx.post(f"http://127.0.0.1:{port}/cgi-bin/v", content=b"x=1", timeout=10).status_code == 200
