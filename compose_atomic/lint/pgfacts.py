"""Facts about PostgreSQL the linter's modules share: lock modes in order, names in parse
trees, column types and which type changes PostgreSQL makes without a rewrite.

The lowest module of the package: it imports nothing from the others (no import cycles).
"""

from __future__ import annotations

LOCK_ORDER = ["ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
              "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"]


def relname(rangevar: dict | None) -> str:
    """A RangeVar's name as written, schema-qualified when it was."""
    if not rangevar:
        return "?"
    name = rangevar.get("relname", "?")
    schema = rangevar.get("schemaname")
    return f"{schema}.{name}" if schema else name


# Types whose modifier is a precision or length limit PostgreSQL can widen without rewriting.
PRECISION_TYPES = frozenset({"timestamp", "timestamptz", "time", "timetz", "varbit", "bit varying"})


def enabled_options(node: dict, key: str) -> set[str]:
    """Names of the DefElem options turned on: ``(FULL)``, ``(FULL true)``, ``(FULL 1)``; not
    ``(FULL false)`` / ``(CONCURRENTLY off)`` / ``0``, which PostgreSQL reads as off."""
    on = set()
    for item in node.get(key) or []:
        d = item.get("DefElem", {})
        arg = d.get("arg")
        if arg is not None:
            if "String" in arg and arg["String"].get("sval", "").lower() in ("false", "off", "no", "0"):
                continue
            if "Integer" in arg and not arg["Integer"].get("ival"):
                continue
            if "Boolean" in arg and not arg["Boolean"].get("boolval"):
                continue
        on.add(d.get("defname", ""))
    return on


def column_type(coldef: dict) -> tuple[str, tuple[int, ...]]:
    """(type name, typmods) of a ColumnDef: ('varchar', (255,)), ('numeric', (10, 2)), ('text', ())."""
    type_name = coldef.get("typeName") or {}
    names = type_name.get("names") or []
    name = names[-1].get("String", {}).get("sval", "").lower() if names else ""
    mods = []
    for mod in type_name.get("typmods") or []:
        value = mod.get("A_Const", {}).get("ival")
        if value is None:
            return name, (-1,)  # not a plain integer modifier: unknown
        mods.append(int(value.get("ival", 0)))
    if type_name.get("arrayBounds"):
        name += "[]"
    return name, tuple(mods)


def binary_compatible(old: tuple[str, tuple[int, ...]], new: tuple[str, tuple[int, ...]]) -> bool:
    """True when ALTER COLUMN TYPE from ``old`` to ``new`` needs no rewrite (PostgreSQL docs:
    binary-coercible and no tighter modifier): longer or unlimited varchar, varchar <-> text,
    wider numeric precision at the same scale, cidr -> inet."""
    (a, amods), (b, bmods) = old, new
    if -1 in amods or -1 in bmods:
        return False
    if a == b and amods == bmods:
        return True
    if a in ("varchar", "text") and b == "text":
        return True
    if a in ("varchar", "text") and b == "varchar":
        if not bmods:
            return True
        return a == "varchar" and bool(amods) and bmods[0] >= amods[0]
    if a == "numeric" and b == "numeric":
        if not bmods:
            return True
        if not amods:
            return False
        ascale = amods[1] if len(amods) > 1 else 0
        bscale = bmods[1] if len(bmods) > 1 else 0
        return bmods[0] >= amods[0] and ascale == bscale
    if a == b and a in PRECISION_TYPES:
        # timestamp(3) -> timestamp(6), varbit(8) -> varbit(16): no rewrite when the limit grows or goes
        # (PostgreSQL's timestamp_support / varbit_support length-coercion functions).
        return not bmods or (bool(amods) and bmods[0] >= amods[0])
    return a == "cidr" and b == "inet"
