"""Insert x-atomic blocks into compose files without touching a byte of what is there.

Why not re-emit the document with a round-trip YAML library (ruamel.yaml)? Tried on
the test cases, its emitter re-indents unless told the file's exact style, moves a
comment that precedes a service below the key inserted before it, re-spaces end-of-line
comments and drops anchors no alias uses. Inserting lines at positions taken from the
YAML parser's marks keeps every comment, anchor, quote and blank line by construction:
the diff of a written file only ever adds lines.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .detect import ComposeFile, Plan


@dataclass
class Edits:
    """The new text of each changed file, and annotations init could not place itself."""

    texts: dict[Path, str] = field(default_factory=dict)
    manual: list[str] = field(default_factory=list)  # "where: snippet to paste"


def _find(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def last_line(node: yaml.Node, floor: int, lines: list[str]) -> int:
    """0-based index of the last line holding ``node``'s content (not trailing comments).

    ``floor`` is the line of the key that holds the node: an alias resolves to the
    anchored node elsewhere in the file, which starts before its key.
    """
    if node.start_mark.line < floor:  # an alias: it sits on its key's line
        return floor
    if isinstance(node, yaml.ScalarNode):
        end = node.end_mark
        line = end.line if end.column > 0 else end.line - 1
        while line > node.start_mark.line and not lines[line].strip():
            line -= 1
        return max(line, floor)
    if getattr(node, "flow_style", False) or not node.value:
        return max(node.end_mark.line if node.end_mark.column > 0 else node.end_mark.line - 1, floor)
    if isinstance(node, yaml.MappingNode):
        key, value = node.value[-1]
        return last_line(value, key.start_mark.line, lines)
    item = node.value[-1]
    if item.start_mark.line < node.start_mark.line:  # `- *alias` last: scan back from the end
        line = node.end_mark.line if node.end_mark.column > 0 else node.end_mark.line - 1
        while line > floor and (not lines[line].strip() or lines[line].lstrip().startswith("#")):
            line -= 1
        return line
    return last_line(item, item.start_mark.line, lines)


def after_own_comments(at: int, column: int, lines: list[str]) -> int:
    """Move an insertion point past the comments that still belong to the block above.

    A comment indented deeper than the block's key (``column``) is part of that block:
    commented-out environment lines, say. A new key inserted before them would adopt
    them, and uncommenting one later would put it under the new key. Blank lines and
    comments at the key's own column or less introduce what follows; they stay below.
    """
    index = at
    while index < len(lines):
        text = lines[index]
        stripped = text.lstrip()
        if not stripped:
            index += 1
            continue
        if stripped.startswith("#") and len(text) - len(stripped) > column:
            index += 1
            at = index
            continue
        break
    return at


@dataclass(frozen=True)
class Style:
    """How the file indents: the mapping step and where a sequence's dash sits."""

    step: int = 2
    seq_offset: int = 2  # columns from the parent key to the dash


def detect_style(root: yaml.Node | None) -> Style:
    step = None
    services = _find(root, "services")
    if services and isinstance(services[1], yaml.MappingNode) and services[1].value:
        step = services[1].value[0][0].start_mark.column - services[0].start_mark.column or None
    offset = _seq_offset(root)
    step = step or 2
    return Style(step, step if offset is None else offset)


def _seq_offset(node: yaml.Node | None) -> int | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(v, yaml.SequenceNode) and not v.flow_style and v.value \
                    and v.start_mark.line > k.start_mark.line:
                return v.start_mark.column - k.start_mark.column
            found = _seq_offset(v) if v.start_mark.line >= k.start_mark.line else None
            if found is not None:
                return found
    return None


_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./-]*")


def scalar(value: Any) -> str:
    """A YAML scalar that every YAML 1.1 and 1.2 reader takes the same way."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    if re.fullmatch(r"\d+(\.\d+)?(ns|us|ms|s|m|h)", text):  # durations: 10s
        return text
    return json.dumps(text, ensure_ascii=False)


def render(mapping: dict[str, Any], column: int, style: Style) -> list[str]:
    """Block-style YAML lines for ``mapping``, its keys at ``column``."""
    pad = " " * column
    out: list[str] = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.append(f"{pad}{scalar(key)}:")
            out += render(value, column + style.step, style)
        elif isinstance(value, list) and value:
            out.append(f"{pad}{scalar(key)}:")
            dash = " " * (column + style.seq_offset)
            out += [f"{dash}- {scalar(item)}" for item in value]
        else:
            out.append(f"{pad}{scalar(key)}: {scalar(value) if value not in ({}, []) else json.dumps(value)}")
    return out


def apply_plan(files: list[ComposeFile], plan: Plan) -> Edits:
    """Where each proposed annotation goes and the files' new text.

    A service's annotation goes into the first file that defines it (the base file
    rather than a development override); the project's into the first file.
    """
    edits = Edits()
    inserts: dict[Path, list[tuple[int, list[str]]]] = {}

    for name, annotation in plan.services.items():
        home = next((f for f in files if name in (f.data.get("services") or {})), None)
        found = _find(_find(home.root, "services")[1], name) if home and _find(home.root, "services") else None
        if home is None or found is None:
            continue
        key, node = found
        snippet = {"x-atomic": annotation}
        if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value \
                or node.start_mark.line < key.start_mark.line:
            edits.manual.append(f"{_shown(home.path)} services.{name} (written in a form init does not edit):\n"
                                + "\n".join(render(snippet, 4, Style())))
            continue
        lines = home.text.splitlines()
        anchor = re.search(r"&([^\s,\]}]+)", lines[key.start_mark.line][key.end_mark.column:])
        if anchor and re.search(r"<<\s*:\s*\*" + re.escape(anchor.group(1)) + r"\b", home.text):
            edits.manual.append(f"{_shown(home.path)} services.{name} (its anchor &{anchor.group(1)} is merged "
                                "into other services, which would inherit the annotation):\n"
                                + "\n".join(render(snippet, 4, Style())))
            continue
        column = node.value[0][0].start_mark.column
        at = after_own_comments(last_line(node, key.start_mark.line, lines) + 1, key.start_mark.column, lines)
        inserts.setdefault(home.path, []).append((at, render(snippet, column, detect_style(home.root))))

    if plan.project:
        first = files[0]
        lines = first.text.splitlines()
        style = detect_style(first.root)
        existing = _find(first.root, "x-atomic")
        services = _find(first.root, "services")
        if existing and isinstance(existing[1], yaml.MappingNode) and existing[1].value \
                and not existing[1].flow_style:
            key, node = existing
            at = last_line(node, key.start_mark.line, lines) + 1
            block = render(plan.project, node.value[0][0].start_mark.column, style)
        elif existing:
            edits.manual.append(f"{_shown(first.path)} x-atomic:\n" + "\n".join(render(plan.project, 2, style)))
            block, at = [], 0
        elif services:
            at = services[0].start_mark.line
            while at > 0 and lines[at - 1].lstrip().startswith("#"):
                at -= 1  # keep a comment that introduces services: above it
            block = render({"x-atomic": plan.project}, 0, style) + [""]
        else:
            at = len(lines)
            block = [""] + render({"x-atomic": plan.project}, 0, style)
        if block:
            inserts.setdefault(first.path, []).append((at, block))

    for file in files:
        if file.path in inserts:
            edits.texts[file.path] = _insert(file.text, inserts[file.path])
    return edits


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _insert(text: str, inserts: list[tuple[int, list[str]]]) -> str:
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")) and any(at >= len(lines) for at, _ in inserts):
        lines[-1] += newline  # only when appending after the last line
    for at, block in sorted(inserts, key=lambda item: item[0], reverse=True):
        lines[at:at] = [line + newline for line in block]
    return "".join(lines)


def unified_diff(files: list[ComposeFile], edits: Edits, base: Path) -> str:
    """A ``diff -u`` of every changed file, paths relative to ``base`` where possible."""
    chunks = []
    for file in files:
        if file.path not in edits.texts:
            continue
        try:
            shown = str(file.path.resolve().relative_to(base.resolve()))
        except ValueError:
            shown = str(file.path)
        chunks += difflib.unified_diff(file.text.splitlines(keepends=True),
                                       edits.texts[file.path].splitlines(keepends=True),
                                       f"a/{shown}", f"b/{shown}")
    return "".join(chunks)
