"""Decisions of `stack deploy` and `stack status` on a swarm of several nodes, from what the
engine answers (a scripted gateway). The behaviour itself is proven on three real engines in
tests/test_swarm_multinode.py."""

from __future__ import annotations

import json

from compose_atomic import docker
from compose_atomic.docker import Gateway, Result
from compose_atomic.swarm import deploy, status
from compose_atomic.swarm.render import RenderedStack


class Scripted(Gateway):
    """Answers each command from a table keyed by its first arguments; records what ran."""

    def __init__(self, answers: dict[tuple[str, ...], str]):
        super().__init__()
        self.answers, self.ran = answers, []

    def run(self, command, **kwargs):
        self.ran.append(command.argv)
        for key, out in self.answers.items():
            if command.argv[1:1 + len(key)] == key:
                return Result(command, 0, out)
        return Result(command, 1, "", "unexpected")


NODES = [
    {"ID": "m1", "Description": {"Hostname": "a"}, "Status": {"State": "ready", "Addr": "0.0.0.0"},
     "ManagerStatus": {"Addr": "10.0.0.1:2377"}, "Spec": {"Availability": "active"}},
    {"ID": "w2", "Description": {"Hostname": "b"}, "Status": {"State": "down", "Addr": "10.0.0.2"},
     "Spec": {"Availability": "active"}},
]


def test_nodes_take_a_managers_raft_address_when_it_reports_0000():
    with docker.use(Scripted({("node", "ls"): "m1\nw2\n", ("node", "inspect"): json.dumps(NODES)})):
        nodes = deploy.swarm_nodes()
    assert [(n.hostname, n.address, n.manager, n.up) for n in nodes] == [("a", "10.0.0.1", True, True),
                                                                         ("b", "10.0.0.2", False, False)]


def test_images_from_no_registry_are_deployed_without_resolving_them():
    rendered = RenderedStack("s", {"services": {"web": {"image": "local/app:1"}, "db": {"image": "pg:17"}}})
    images = [{"Id": "sha256:1", "RepoTags": ["local/app:1"], "RepoDigests": []},
              {"Id": "sha256:2", "RepoTags": ["pg:17"], "RepoDigests": ["pg@sha256:abc"]}]
    gateway = Scripted({("image", "inspect"): json.dumps(images), ("node", "ls"): "m1\nw2\n"})
    with docker.use(gateway):
        assert deploy.local_only_images(rendered) == ["local/app:1"]
        assert deploy.resolve_image_mode(rendered, "auto") == "never"
        assert deploy.resolve_image_mode(rendered, "always") == "always"
    images[0]["RepoDigests"] = ["local/app@sha256:def"]
    gateway.answers[("image", "inspect")] = json.dumps(images)
    with docker.use(gateway):
        assert deploy.resolve_image_mode(rendered, "auto", nodes=[object(), object()]) == "always"


def test_an_update_waiting_on_a_task_that_was_starting_on_a_lost_node_is_stalled():
    tasks = [{"ID": "t1", "Node": "b", "CurrentState": "Starting 2 minutes ago", "DesiredState": "Shutdown"},
             {"ID": "t2", "Node": "a", "CurrentState": "Running 1 minute ago", "DesiredState": "Running"}]
    with docker.use(Scripted({("service", "ps"): "\n".join(json.dumps(t) for t in tasks)})):
        assert deploy._stalled_on_lost_node("s_web", {"b"}) == ("t1", "b")
        assert deploy._stalled_on_lost_node("s_web", set()) is None
        assert deploy._stalled_on_lost_node("s_web", {"a"}) is None  # a running task does not hold the updater


def test_status_text_lists_each_node_and_its_tasks():
    view = status.StackStatus("s", services=[status.ServiceView("web", "replicated", 3, 3, "completed")],
                              nodes=[status.NodeView("a", "manager", "ready", "active", "10.0.0.1",
                                                     [status.TaskView("s_web.1", "web", "app:2", "Running 1 second ago")]),
                                     status.NodeView("b", "worker", "down", "active", "10.0.0.2")])
    text = status.status_text(view)
    assert "web  replicated  3/3  last update: completed" in text
    assert "Node a (manager, ready, active, 10.0.0.1)\n  s_web.1  Running 1 second ago  app:2" in text
    assert "Node b (worker, down, active, 10.0.0.2)\n  no task of this stack" in text
