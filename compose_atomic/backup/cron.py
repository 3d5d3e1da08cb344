"""Cron expressions for the sidecar: normalised for its POSIX sh matcher, and the
longest gap between two runs, which sets the health check's freshness limit.

The sidecar matches plain numeric fields once a minute (``*``, ``a``, ``a-b``,
``*/n``, ``a-b/n`` and lists), exactly like cron. Macros and month/day names are
translated here, so the shell never has to.
"""

from __future__ import annotations

import datetime as dt

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
NAMES = {
    3: {n: i + 1 for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())},
}
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
FIELD_NAMES = ["minute", "hour", "day of month", "month", "day of week"]


class CronError(ValueError):
    """A cron expression the sidecar cannot run."""


def _value(text: str, index: int) -> int:
    lowered = text.lower()
    if lowered in NAMES.get(index, {}):
        return NAMES[index][lowered]
    if not text.isdigit():
        raise CronError(f"{FIELD_NAMES[index]} field: {text!r} is not a number")
    value = int(text)
    lo, hi = RANGES[index]
    if not lo <= value <= hi:
        raise CronError(f"{FIELD_NAMES[index]} field: {value} is outside {lo}-{hi}")
    return value


def _field(text: str, index: int) -> tuple[str, set[int]]:
    """One field: its numeric spelling and the set of values it matches."""
    lo, hi = RANGES[index]
    parts, values = [], set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{FIELD_NAMES[index]} field: bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end, spelled = lo, hi, "*"
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, index), _value(b, index)
            if start > end:
                raise CronError(f"{FIELD_NAMES[index]} field: range {part} runs backwards")
            spelled = f"{start}-{end}"
        else:
            start = _value(part, index)
            end = hi if step > 1 else start
            spelled = str(start)
        values.update(range(start, end + 1, step))
        parts.append(spelled + (f"/{step}" if step > 1 else ""))
    if index == 4:
        values = {0 if v == 7 else v for v in values}
    return ",".join(parts), values


def normalize(expression: str) -> str:
    """The 5-field numeric form the sidecar matches; raises CronError with the reason."""
    expression = MACROS.get(expression.strip().lower(), expression.strip())
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"{expression!r} has {len(fields)} fields; cron needs 5: minute hour "
                        "day-of-month month day-of-week (or @daily, @hourly, @weekly, @monthly)")
    return " ".join(_field(f, i)[0] for i, f in enumerate(fields))


def matches(expression: str, when: dt.datetime) -> bool:
    """Whether cron runs at ``when`` (day-of-month and day-of-week OR when both are set)."""
    fields = normalize(expression).split()
    sets = [_field(f, i)[1] for i, f in enumerate(fields)]
    dow = (when.weekday() + 1) % 7
    if not (when.minute in sets[0] and when.hour in sets[1] and when.month in sets[3]):
        return False
    if fields[2] != "*" and fields[4] != "*":
        return when.day in sets[2] or dow in sets[4]
    return when.day in sets[2] and dow in sets[4]


def max_interval(expression: str, start: dt.datetime | None = None, days: int = 400) -> float:
    """The longest gap in seconds between two runs over ``days`` (leap years and months included)."""
    fields = normalize(expression).split()
    minutes, hours = sorted(_field(fields[0], 0)[1]), sorted(_field(fields[1], 1)[1])
    start = start or dt.datetime(2024, 1, 1)
    previous, longest, fires = None, 0.0, 0
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        if not matches(expression, day.replace(hour=hours[0], minute=minutes[0])):
            continue
        for hour in hours:
            for minute in minutes:
                moment = day.replace(hour=hour, minute=minute)
                if previous is not None:
                    longest = max(longest, (moment - previous).total_seconds())
                previous, fires = moment, fires + 1
    if fires < 2:
        if days < 3000:
            return max_interval(expression, start, days=366 * 8 + 2)
        raise CronError(f"{expression!r} runs less than twice in eight years")
    return longest
