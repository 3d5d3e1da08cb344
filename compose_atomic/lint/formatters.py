"""Output formats: text (code frame, underline, safe recipe), json, sarif (2.1.0), github."""

from __future__ import annotations

import json
import os


from .model import Finding, Rule

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_URL = "https://github.com/compose-atomic/compose-atomic/blob/main/docs/lint.md"


def format_json(findings: list[Finding]) -> bytes:
    """UTF-8 JSON: with orjson (4x json.dumps on bench/lint's history, whose 5,000 findings make
    3 MB), json.dumps if orjson is missing or refuses a string (a lone surrogate)."""
    items = [f.as_json() for f in findings]
    try:
        from orjson import dumps
    except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
        pass
    else:
        try:
            return dumps(items)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(items, ensure_ascii=False).encode("utf-8", "replace")


def format_github(findings: list[Finding]) -> str:
    """GitHub Actions workflow commands: one ``::error``/``::warning`` per finding."""
    def esc_data(s: str) -> str:
        return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def esc_prop(s: str) -> str:
        return esc_data(s).replace(":", "%3A").replace(",", "%2C")

    lines = []
    for f in findings:
        level = {"error": "error", "info": "notice"}.get(f.severity, "warning")
        message = f.message + (f"\n{f.help}" if f.help else "")
        lines.append(f"::{level} file={esc_prop(f.file)},line={f.line},col={f.column},endLine={f.end_line},"
                     f"endColumn={f.end_column},title={esc_prop(f.rule)}::{esc_data(message)}")
    return "\n".join(lines)


def _sarif_level(severity: str) -> str:
    return {"error": "error", "info": "note"}.get(severity, "warning")


def repository_root(start: str | None = None) -> str:
    """The enclosing git work tree (a ``.git`` directory or file), else the working directory:
    SARIF locations are relative to it, as GitHub code scanning expects."""
    here = os.path.abspath(start or os.getcwd())
    probe = here
    while True:
        if os.path.exists(os.path.join(probe, ".git")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return here
        probe = parent


def _artifact(path: str, root: str) -> dict:
    """A SARIF artifactLocation: percent-encoded, relative to SRCROOT when under it."""
    from pathlib import Path
    from urllib.parse import quote

    full = os.path.abspath(path)
    rel = os.path.relpath(full, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return {"uri": Path(full).as_uri()}  # outside the repository: an absolute file URI
    return {"uri": quote(rel.replace(os.sep, "/"), safe="/"), "uriBaseId": "SRCROOT"}


def _fingerprint(f: Finding, uri: str, seen: dict) -> str:
    """Stable across edits elsewhere in the file: the rule, the file and the statement's text
    (whitespace-normalised), not its line; a repeat of the same statement gets its ordinal."""
    import hashlib

    text = " ".join(f.statement.split())
    key = (f.rule, uri, text)
    seen[key] = seen.get(key, 0) + 1
    digest = hashlib.sha256("\0".join((f.rule, uri, text, str(seen[key]))).encode()).hexdigest()
    return digest[:32]


def format_sarif(findings: list[Finding], rules: dict[str, Rule], version: str, root: str | None = None) -> str:
    """SARIF 2.1.0 for GitHub code scanning (``github/codeql-action/upload-sarif``): locations
    relative to the ``SRCROOT`` base (the repository root), percent-encoded; a partial
    fingerprint per result; each rule's ``helpUri`` is its section of docs/lint.md."""
    from pathlib import Path

    root = root or repository_root()
    used = sorted({f.rule for f in findings} | set(rules))
    index = {rule_id: i for i, rule_id in enumerate(used)}
    descriptors = []
    for rule_id in used:
        rule = rules.get(rule_id)
        descriptor = {
            "id": rule_id,
            "name": rule_id,
            "shortDescription": {"text": rule.summary if rule else rule_id},
            "fullDescription": {"text": (rule.why if rule and rule.why else rule_id)},
            "help": {"text": rule.recipe if rule and rule.recipe else rule_id},
            "helpUri": f"{DOCS_URL}#{rule_id}",
            "defaultConfiguration": {"level": _sarif_level(rule.severity if rule else "error")},
        }
        if rule and rule.postgres:
            descriptor["properties"] = {"postgresql": rule.postgres}
        descriptors.append(descriptor)
    results = []
    seen: dict = {}
    for f in findings:
        artifact = _artifact(f.file, root)
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _sarif_level(f.severity),
            "message": {"text": f.message + (f" {f.help}" if f.help else "")},
            "locations": [{"physicalLocation": {
                "artifactLocation": artifact,
                "region": {"startLine": f.line, "startColumn": f.column, "endLine": f.end_line,
                           "endColumn": f.end_column},
            }}],
            "partialFingerprints": {"compose-atomic/v1": _fingerprint(f, artifact["uri"], seen)},
        }
        if f.lock:
            result["properties"] = {"lock": f.lock}
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "compose-atomic-lint", "version": version,
                                "informationUri": DOCS_URL, "rules": descriptors}},
            "originalUriBaseIds": {"SRCROOT": {"uri": Path(root).as_uri().rstrip("/") + "/"}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def format_text(findings: list[Finding], texts: dict[str, str], color: bool = False) -> str:
    """Human output: ``file:line:col: severity[rule] message``, the statement with the span
    underlined, the lock, and the safe recipe."""
    def style(s: str, fg: str | None = None, bold: bool = False) -> str:
        if not color:
            return s
        import click

        return click.style(s, fg=fg, bold=bold)

    out: list[str] = []
    for f in findings:
        colour = {"error": "red", "info": "blue"}.get(f.severity, "yellow")
        out.append(f"{style(f'{f.file}:{f.line}:{f.column}', bold=True)}: "
                   f"{style(f.severity, colour, True)}[{f.rule}] {f.message}")
        lines = texts.get(f.file, "").splitlines()
        last = min(f.end_line, f.line + 7)
        width = len(str(last))
        for n in range(f.line, last + 1):
            if n - 1 >= len(lines):
                break
            code = lines[n - 1]
            out.append(f"  {str(n).rjust(width)} | {code}")
            a = f.column - 1 if n == f.line else len(code) - len(code.lstrip())
            b = f.end_column - 1 if n == f.end_line else len(code)
            if b > a:
                out.append(f"  {' ' * width} | {' ' * a}{style('^' * (b - a), colour)}")
        if f.end_line > last:
            out.append(f"  {' ' * width} | ...")
        if f.lock:
            out.append(f"  lock: {f.lock}")
        if f.help:
            out.append(f"  {style('safe:', 'green')} {f.help}")
        out.append("")
    errors = sum(1 for f in findings if f.severity == "error")
    infos = sum(1 for f in findings if f.severity == "info")
    warnings = len(findings) - errors - infos
    files = len({f.file for f in findings})
    if findings:
        out.append(f"{errors} error(s), {warnings} warning(s)" + (f", {infos} info" if infos else "")
                   + f" in {files} file(s)")
    return "\n".join(out)
