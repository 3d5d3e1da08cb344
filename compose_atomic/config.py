"""Validate ``x-atomic`` annotations against the JSON Schema and explain every problem.

A bad annotation must never reach a deploy: each problem is reported as one
paragraph naming the file and line, the service, the key path, what was found,
what is allowed, and a "did you mean" for a misspelt key or value.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError
from .project import ComposeOptions, Project

SCOPES = ("project", "service")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with an annotation, with everything needed to fix it."""

    key_path: tuple[str | int, ...]  # inside x-atomic
    message: str
    service: str | None = None
    location: str | None = None  # "file:line"

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        owner = f'service "{self.service}": ' if self.service else "top-level "
        keys = ".".join(str(k) for k in ("x-atomic", *self.key_path))
        return f"{where}{owner}{keys}: {self.message}"


@functools.cache
def base_schema() -> dict[str, Any]:
    """The schema shipped in the package (also published as docs/x-atomic.schema.json)."""
    from importlib import resources  # (with tempfile, shutil...): only when a schema is needed

    text = resources.files("compose_atomic").joinpath("schema/x-atomic.schema.json").read_text()
    return json.loads(text)


def full_schema() -> dict[str, Any]:
    """The shipped schema plus the keys plugins declare through ``register_config_schema``."""
    from .plugins import call_hook, load_plugins

    load_plugins()
    schema = copy.deepcopy(base_schema())

    def register(key: str, key_schema: dict[str, Any], scope: str = "service") -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
        schema["$defs"][scope]["properties"][key] = key_schema

    call_hook("register_config_schema", register=register)
    return schema


def validate_project(project: Project) -> None:
    """Raise ConfigError listing every problem in the project's annotations."""
    from .plugins import call_hook

    problems = list(schema_problems(project.config, full_schema()))
    if not problems:
        for found in call_hook("validate_config", project=project):
                               problems.extend(found or [])
    if problems:
        located = [_locate_problem(p, project.files) for p in problems]
        count = f"{len(located)} problems" if len(located) > 1 else "1 problem"
        body = "\n".join(f"  - {p}" for p in located)
        raise ConfigError(
            f"invalid x-atomic configuration ({count}):\n{body}",
            hint="The keys are documented in docs/configuration.md; "
                 "the JSON Schema is docs/x-atomic.schema.json.",
        )


def load_valid_project(options: ComposeOptions) -> Project:
    """The resolved project, or ConfigError: what every command that acts on a project starts with."""
    from .project import load_project

    project = load_project(options)
    validate_project(project)
    return project


def schema_problems(config: dict[str, Any], schema: dict[str, Any]) -> Iterable[ConfigProblem]:
    """Check the resolved compose config's x-atomic mappings; yield one problem per error."""
    from jsonschema import Draft202012Validator

    defs = schema["$defs"]
    targets: list[tuple[str | None, Any, str]] = []
    if "x-atomic" in config:
        targets.append((None, config["x-atomic"], "project"))
    for name, service in (config.get("services") or {}).items():
        if isinstance(service, dict) and "x-atomic" in service:
            targets.append((name, service["x-atomic"], "service"))
    for service, value, scope in targets:
        sub = {"$defs": defs, **defs[scope]}
        validator = Draft202012Validator(sub)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        for error in errors:
            yield from _explain(error, service)


def _explain(error: Any, service: str | None) -> Iterable[ConfigProblem]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        for key in error.instance:
            if key in allowed:
                continue
            text = f'unknown key "{key}". Allowed here: {", ".join(allowed) or "none"}.'
            text += _did_you_mean(str(key), allowed)
            yield ConfigProblem(path + (key,), text, service)
        if not allowed:  # a free-form mapping whose values are wrong
            return
        return
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield ConfigProblem(path, f'the key "{missing}" is required here.', service)
    elif kind == "oneOf":
        options = [next(iter(s.get("required", ["?"]))) for s in error.validator_value]
        yield ConfigProblem(path, f"set exactly one of: {', '.join(options)}.", service)
    elif kind == "enum":
        allowed = [str(v) for v in error.validator_value]
        text = f"{_found(error.instance)} is not allowed. Use one of: {', '.join(allowed)}."
        yield ConfigProblem(path, text + _did_you_mean(str(error.instance), allowed), service)
    elif kind == "pattern" and "ms|s|m|h" in str(error.validator_value):
        yield ConfigProblem(path, f"{_found(error.instance)} is not a duration. "
                                  "Use Compose's form, like 30s, 1m30s or 500ms.", service)
    elif kind == "pattern" and "[0-9]{1,5}" in str(error.validator_value):
        yield ConfigProblem(path, f"{_found(error.instance)} is not a port. Use Compose's short syntax, like "
                                  '"80:80", "127.0.0.1:8080:80" or 443.', service)
    elif kind == "pattern":
        yield ConfigProblem(path, f"{_found(error.instance)} must match {error.validator_value}.", service)
    elif kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        text = f"expected {_article(wanted)}, found {_found(error.instance)}"
        if error.schema.get("pattern", "").endswith("ms|s|m|h))+$"):
            text += " (a duration needs a unit, like 30s)"
        yield ConfigProblem(path, text + ".", service)
    elif kind in ("minimum", "maximum"):
        bound = "at least" if kind == "minimum" else "at most"
        yield ConfigProblem(path, f"{_found(error.instance)} is out of range; it must be "
                                  f"{bound} {error.validator_value}.", service)
    elif kind == "anyOf" and any(sub.validator != "type" for sub in error.context or ()):
        # The value has the right type for one branch but breaks its rule: explain that rule.
        yield from _explain(next(sub for sub in error.context if sub.validator != "type"), service)
    elif kind == "anyOf":
        kinds = sorted({str(s.get("type")) for s in error.validator_value})
        yield ConfigProblem(path, f"expected {' or '.join(_article(k) for k in kinds)} "
                                  f"(a list holds strings), found {_found(error.instance)}.", service)
    else:
        yield ConfigProblem(path, error.message + ".", service)


def _found(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f'"{value}"'


def _article(type_name: str) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string",
             "integer": "a whole number", "number": "a number", "boolean": "true or false"}
    return names.get(type_name, type_name)


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' Did you mean "{match[0]}"?' if match else ""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean "x"?`` or an empty string, for plugins' own messages."""
    return _did_you_mean(word, list(choices))


# ---- checks across services ----------------------------------------------------


def _route_hosts(route: dict[str, Any]) -> list[str]:
    hosts = route.get("host")
    hosts = [hosts] if isinstance(hosts, str) else [h for h in (hosts or []) if isinstance(h, str)]
    return [h.strip().lower().rstrip(".") for h in hosts if h.strip()]


def _route_path(route: dict[str, Any]) -> str:
    path = route.get("path")
    return (path.rstrip("/") or "/") if isinstance(path, str) and path else "/"


def route_conflicts(routes: dict[str, dict[str, Any]]) -> list[ConfigProblem]:
    """Problems for routes that match the same host and path as another service's route.

    ``routes`` maps a service to its ``x-atomic.route``. A route without a host matches
    every host; two such routes (or two with a host in common) on the same path
    prefix would leave one service unreachable, whichever the proxy tried first.
    """
    problems: list[ConfigProblem] = []
    seen: dict[tuple[str, str], str] = {}
    for service in sorted(routes):
        route = routes[service]
        if not isinstance(route, dict):
            continue
        path = _route_path(route)
        clashes: list[tuple[str, str]] = []
        for host in _route_hosts(route) or ["*"]:
            other = seen.get((host, path))
            if other is not None and other != service:
                clashes.append((host, other))
            else:
                seen[(host, path)] = service
        for host, other in clashes:
            what = "every host (neither route has route.host)" if host == "*" else f'host "{host}"'
            where = "every path" if path == "/" else f"path {path}"
            problems.append(ConfigProblem(
                ("route",),
                f'matches the same requests as service "{other}": {what}, {where}. The proxy would '
                "send them all to one of the two. Give each route its own route.host (or route.path), "
                "or remove one of the routes.",
                service))
    return problems


# ---- pointing at file and line ------------------------------------------------


def _locate_problem(problem: ConfigProblem, files: list[Path]) -> ConfigProblem:
    prefix: list[str | int] = ["services", problem.service] if problem.service else []
    location = locate(files, [*prefix, "x-atomic", *problem.key_path])
    if location is None:
        return problem
    return ConfigProblem(problem.key_path, problem.message, problem.service, location)


def locate(files: list[Path], key_path: list[str | int]) -> str | None:
    """``file:line`` of the deepest part of key_path found, preferring later files.

    Later files override earlier ones in Compose, so the last file that sets a
    key is the one to edit.
    """
    import yaml

    best: tuple[int, str] | None = None
    for path in files:
        try:
            root = yaml.compose(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        depth, line = _walk(root, key_path)
        if depth and (best is None or depth >= best[0]):
            best = (depth, f"{_display(path)}:{line}")
    return best[1] if best else None


def _walk(node: Any, key_path: list[str | int]) -> tuple[int, int]:
    import yaml

    depth, line = 0, 0
    for key in key_path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    depth, line, node = depth + 1, k.start_mark.line + 1, v
                    break
            else:
                return depth, line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            depth, line = depth + 1, node.start_mark.line + 1
        else:
            return depth, line
    return depth, line


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
