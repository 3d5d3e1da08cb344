"""What the files linted so far tell about the schema, carried from file to file in order.

An earlier migration's ``CREATE TABLE`` tells whether a later ``ALTER COLUMN TYPE`` is
binary-compatible; a validated ``CHECK (col IS NOT NULL)`` lets a later ``SET NOT NULL``
skip its scan (as in squawk); a ``CREATE INDEX`` names the columns of a later ``ADD PRIMARY
KEY USING INDEX``. ``LintContext.after`` changes it only through the methods below (the
*changes*), and each depends on the statement alone, never on what is known already.

That is what lets a forked child lint the second half of a history without the first
(``Linter.lint_texts``): it records each change and each read the rules make (a
``Recorder``), and the parent, once it knows the first half, replays the changes and checks
that every read would have seen the same thing. A file whose reads differ is linted again
in the parent, so the findings are those of one process in every case.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Knowledge", "Recorder", "replay"]


class Knowledge:
    """Column types, NOT NULL columns, proven NOT NULL checks and index columns seen so far."""

    def __init__(self) -> None:
        self.schema: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}  # table -> column -> type
        self.not_null: set[tuple[str, str]] = set()  # (table, column) declared NOT NULL
        self.proven_not_null: set[tuple[str, str]] = set()  # by a validated CHECK (col IS NOT NULL)
        self.not_null_checks: dict[str, tuple[str, str]] = {}  # such a check's name -> (table, column)
        self.index_columns: dict[str, tuple[str, list[str]]] = {}  # index -> (table, columns)

    def copy(self) -> "Knowledge":
        other = Knowledge()
        other.schema = {table: dict(columns) for table, columns in self.schema.items()}
        other.not_null = set(self.not_null)
        other.proven_not_null = set(self.proven_not_null)
        other.not_null_checks = dict(self.not_null_checks)
        other.index_columns = dict(self.index_columns)
        return other

    # ---- the changes (a Recorder logs each call) ---------------------------------------

    def create_table(self, table: str, columns: dict, not_null: list[str]) -> None:
        self.schema[table] = dict(columns)
        self.not_null.update((table, column) for column in not_null)

    def create_index(self, index: str, table: str, columns: list[str]) -> None:
        self.index_columns[index] = (table, list(columns))

    def rename_table(self, old: str, new: str) -> None:
        if old in self.schema:
            self.schema[new] = self.schema.pop(old)

    def rename_column(self, table: str, old: str, new: str) -> None:
        columns = self.schema.get(table, {})
        if old in columns:
            columns[new] = columns.pop(old)

    def drop_table(self, table: str) -> None:
        self.schema.pop(table, None)

    def set_not_null(self, table: str, column: str, on: bool) -> None:
        if on:
            self.not_null.add((table, column))
        else:
            self.not_null.discard((table, column))

    def set_column(self, table: str, column: str, type_: tuple) -> None:
        """A column added or retyped (known only for a table whose CREATE TABLE was linted)."""
        if table in self.schema:
            self.schema[table][column] = type_

    def drop_column(self, table: str, column: str) -> None:
        if table in self.schema:
            self.schema[table].pop(column, None)

    def add_not_null_check(self, name: str | None, table: str, column: str, validated: bool) -> None:
        if name:
            self.not_null_checks[name] = (table, column)
        if validated:
            self.proven_not_null.add((table, column))

    def validate_check(self, name: str) -> None:
        found = self.not_null_checks.get(name)
        if found:
            self.proven_not_null.add(found)


CHANGES = ("create_table", "create_index", "rename_table", "rename_column", "drop_table", "set_not_null",
           "set_column", "drop_column", "add_not_null_check", "validate_check")


class _ReadDict(dict):
    """A dict that logs what ``get``, ``in`` and ``[]`` saw (outside the changes)."""

    def __init__(self, name: str, recorder: "Recorder") -> None:
        super().__init__()
        self._name, self._recorder = name, recorder

    def get(self, key, default=None):
        self._recorder.saw(self._name, key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self._recorder.saw(self._name, key)
        return super().__contains__(key)

    def __getitem__(self, key):
        self._recorder.saw(self._name, key)
        return super().__getitem__(key)


class _ReadSet(set):
    def __init__(self, name: str, recorder: "Recorder") -> None:
        super().__init__()
        self._name, self._recorder = name, recorder

    def __contains__(self, key) -> bool:
        self._recorder.saw(self._name, key)
        return super().__contains__(key)


def _seen(knowledge: Knowledge, name: str, key) -> Any:
    """What ``knowledge`` holds under ``key`` of its structure ``name``, as a plain value."""
    held = getattr(knowledge, name)
    if isinstance(held, set):
        return set.__contains__(held, key)
    value = dict.get(held, key, _ABSENT) if isinstance(held, dict) else _ABSENT
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list):
        return (value[0], list(value[1]))
    return value


_ABSENT = "<absent>"


class Recorder(Knowledge):
    """A Knowledge that starts empty and logs, in order, every change and every read of the
    rules: ``("change", name, args)`` and ``("read", structure, key, value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []
        self._changing = False
        self.schema = _ReadDict("schema", self)
        self.not_null = _ReadSet("not_null", self)
        self.proven_not_null = _ReadSet("proven_not_null", self)
        self.not_null_checks = _ReadDict("not_null_checks", self)
        self.index_columns = _ReadDict("index_columns", self)

    def saw(self, name: str, key) -> None:
        if not self._changing:
            self.events.append(("read", name, key, _seen(self, name, key)))

    def take(self) -> list[tuple]:
        """The events since the last take (one file's)."""
        events, self.events = self.events, []
        return events


def _recorded(name: str):
    change = getattr(Knowledge, name)

    def method(self, *args):
        self.events.append(("change", name, args))
        self._changing = True
        try:
            change(self, *args)
        finally:
            self._changing = False

    method.__name__ = name
    return method


for _name in CHANGES:
    setattr(Recorder, _name, _recorded(_name))


def replay(knowledge: Knowledge, events: list[tuple]) -> bool:
    """Apply the changes of ``events`` to ``knowledge``; True when each read in them saw what
    ``knowledge`` holds at that point (so the findings made with them stand)."""
    agree = True
    for event in events:
        if event[0] == "change":
            getattr(knowledge, event[1])(*event[2])
        elif agree and _seen(knowledge, event[1], event[2]) != event[3]:
            agree = False
    return agree
