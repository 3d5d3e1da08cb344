#!/usr/bin/env python3
"""Generate docs/configuration.md from compose_atomic/schema/x-atomic.schema.json.

The schema is the single source of truth for the x-atomic keys; this page is
derived from it, and tests/unit/test_config_reference.py fails when the two differ.

    python docs/gen_config_reference.py           # rewrite docs/configuration.md
    python docs/gen_config_reference.py --check   # exit 1 when it is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "compose_atomic" / "schema" / "x-atomic.schema.json"
OUTPUT = ROOT / "docs" / "configuration.md"

HEADER = """\
# Configuration reference (`x-atomic`)

<!-- Generated from compose_atomic/schema/x-atomic.schema.json by docs/gen_config_reference.py.
     Do not edit by hand: change the schema, then run `python docs/gen_config_reference.py`. -->

compose-atomic reads `x-atomic` keys from your compose files: a top-level `x-atomic` for the
whole project, and `services.<name>.x-atomic` for each service it deploys, migrates or backs
up. Compose ignores `x-` keys, so the files keep working with plain `docker compose`. Override
files and `${VARIABLE}` interpolation apply to them as to everything else.

```yaml
x-atomic:
  proxy:
    ports: ["80:80", "443:443"]

services:
  web:
    image: ghcr.io/acme/web:${TAG:-latest}
    x-atomic:
      route: {port: 8000, host: app.example.com}
      health: {path: /healthz}
  db:
    image: postgres:17-alpine
    x-atomic:
      backup: {schedule: "0 3 * * *"}
```

`compose-atomic init` proposes these keys for the files you have; `compose-atomic check`
validates them, naming the file, line and key of every problem (exit code 2). The schema is
published as [x-atomic.schema.json](x-atomic.schema.json); `compose-atomic schema` prints it
with the keys that installed plugins add.

**Durations** are written as in Compose: `30s`, `1m30s`, `500ms`, `1h`.
"""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Follow a ``$ref`` into ``$defs``; the referenced name is returned too."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = dict(defs[name])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return target, name
    return node, None


def kind(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short human type: ``duration``, ``list of strings``, ``one of `a`, `b```..."""
    node, ref = _resolve(node, defs)
    if ref == "duration":
        return "duration"
    if ref == "port":
        return "port (1-65535)"
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(kind(option, defs) for option in node["anyOf"])
    types = node.get("type")
    if isinstance(types, list):
        return " or ".join(kind({**node, "type": t}, defs) for t in types)
    if types == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return f"mapping of name to {kind(extra, defs)}"
        return "mapping"
    if types == "array":
        item = kind(node.get("items", {}), defs)
        return f"list of {item}s" if item in ("string", "integer") else f"list of {item}"
    if types == "integer":
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return f"integer ({low}-{high})"
        if low is not None:
            return f"integer (at least {low})"
        return "integer"
    return str(types or "any")


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'], ensure_ascii=False)}`"


def _describe(node: dict[str, Any], defs: dict[str, Any]) -> str:
    resolved, ref = _resolve(node, defs)
    text = node.get("description") or ("" if ref in ("duration", "port") else resolved.get("description", ""))
    notes = []
    if resolved.get("pattern") == "^/":
        notes.append("Starts with `/`.")
    if resolved.get("required"):
        notes.append("Requires " + ", ".join(f"`{k}`" for k in resolved["required"]) + ".")
    if resolved.get("oneOf"):
        choices = [next(iter(option.get("required", ["?"]))) for option in resolved["oneOf"]]
        notes.append("Set exactly one of " + ", ".join(f"`{c}`" for c in choices) + ".")
    return " ".join(part for part in [text, *notes] if part).replace("|", "\\|").replace("\n", " ")


def rows(prefix: str, node: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """Table rows for ``node`` and, flattened, every key nested under it."""
    out = [f"| `{prefix}` | {kind(node, defs)} | {_default(node)} | {_describe(node, defs)} |"]
    resolved, _ = _resolve(node, defs)
    for key, child in (resolved.get("properties") or {}).items():
        out += rows(f"{prefix}.{key}", child, defs)
    return out


def section(title: str, intro: str, scope: dict[str, Any], defs: dict[str, Any], level: str) -> list[str]:
    lines = [f"## {title}", "", intro, ""]
    for key, node in scope.get("properties", {}).items():
        lines += [f"### {level}.{key}" if level else f"### {key}", ""]
        lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
        lines += rows(key, node, defs)
        lines.append("")
    return lines


def render(schema: dict[str, Any]) -> str:
    """The whole page for ``schema``."""
    defs = schema["$defs"]
    lines = [HEADER]
    lines += section("Top-level `x-atomic`", defs["project"]["description"], defs["project"], defs, "")
    lines += section("Service `x-atomic`", defs["service"]["description"], defs["service"], defs, "")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render(json.loads(SCHEMA.read_text()))
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python docs/gen_config_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
