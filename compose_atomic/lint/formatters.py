"""Output formats: text (code frame, underline, safe recipe), json, sarif (2.1.0), github."""

from __future__ import annotations

import json
import os


from .model import Finding, Rule

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_URL = "https://github.com/compose-atomic/compose-atomic/blob/main/docs/lint.md"


def format_json(findings: list[Finding]) -> str:
    return json.dumps([f.as_json() for f in findings], ensure_ascii=False)


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


def format_sarif(findings: list[Finding], rules: dict[str, Rule], version: str) -> str:
    """SARIF 2.1.0 for GitHub code scanning (``github/codeql-action/upload-sarif``)."""
    used = sorted({f.rule for f in findings} | set(rules))
    index = {rule_id: i for i, rule_id in enumerate(used)}
    descriptors = []
    for rule_id in used:
        rule = rules.get(rule_id)
        descriptors.append({
            "id": rule_id,
            "name": rule_id,
            "shortDescription": {"text": rule.summary if rule else rule_id},
            "fullDescription": {"text": (rule.why if rule and rule.why else rule_id)},
            "help": {"text": rule.recipe if rule and rule.recipe else rule_id},
            "helpUri": f"{DOCS_URL}#{rule_id}",
            "defaultConfiguration": {"level": _sarif_level(rule.severity if rule else "error")},
        })
    results = []
    for f in findings:
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _sarif_level(f.severity),
            "message": {"text": f.message + (f" {f.help}" if f.help else "")},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": f.file.replace(os.sep, "/")},
                "region": {"startLine": f.line, "startColumn": f.column, "endLine": f.end_line,
                           "endColumn": f.end_column},
            }}],
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
