"""Job schedules: an interval (`30s`, `15m`, `6h`) or a 5-field cron expression, in UTC.

Cron's day of week counts from Sunday (0 or 7 = Sunday, 1 = Monday); APScheduler 3's counts from
Monday (0 = Monday), and its `from_crontab` passes the numbers through unchanged, so `1-5` would
run Tuesday to Saturday. Numbers are translated to day names here, once, for every user of a
schedule: the config check, the daemon's triggers, catch-up after downtime and drift.

When both the day of month and the day of week are restricted (neither field starts with `*`),
cron runs on days matching *either* (`0 3 1 * 1`: the 1st and every Monday); APScheduler's
CronTrigger would require both. Such a schedule is an OrTrigger of two CronTriggers, one per day
field, with the jitter on the OrTrigger.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from replicator.units import parse_duration

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def is_cron(schedule: str) -> bool:
    return len(schedule.split()) == 5


def validate(schedule: str) -> None:
    """ValueError naming what is wrong, or nothing."""
    if is_cron(schedule):
        try:
            cron_trigger(schedule)
        except ValueError as e:
            raise ValueError(f"bad cron expression {schedule!r}: {e}") from None
        return
    try:
        if parse_duration(schedule).total_seconds() <= 0:
            raise ValueError("an interval must be longer than zero")
    except ValueError:
        raise ValueError(f"expected a cron expression (*/15 * * * *) or an interval like 30s, 15m, 6h; "
                         f"got {schedule!r}") from None


def cron_trigger(schedule: str, jitter: int | None = None):
    """An APScheduler trigger for a standard 5-field cron expression, in UTC: a CronTrigger, or an
    OrTrigger of two when both day fields are restricted (cron's day of month OR day of week)."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    minute, hour, day, month, dow = schedule.split()
    fields = {"minute": minute, "hour": hour, "month": month, "timezone": timezone.utc}
    if _restricted(day) and _restricted(dow):
        return OrTrigger([CronTrigger(day=day, **fields), CronTrigger(day_of_week=_day_names(dow), **fields)],
                         jitter=jitter)
    return CronTrigger(day=day, day_of_week=_day_names(dow), jitter=jitter, **fields)


def _restricted(field: str) -> bool:
    """Cron's rule: a day field starting with `*` (`*`, `*/2`) does not restrict the days."""
    return not field.startswith("*")


def _day_names(field: str) -> str:
    """Cron's day-of-week field with every number (0-7, Sunday first) as a day name."""
    out = []
    for item in field.lower().split(","):
        m = _NUMERIC.match(item)
        if not m or (m.group(1) == "*" and not m.group(3)):
            out.append(item)  # names (`mon-fri`), `*`, or something APScheduler will refuse
            continue
        first = 0 if m.group(1) == "*" else int(m.group(1))
        last = 6 if m.group(1) == "*" else int(m.group(2) or first)
        if m.group(3) and not m.group(2) and m.group(1) != "*":
            last = 6  # `1/2`: from Monday, every other day to Saturday
        step = int(m.group(3) or 1)
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"day of week {item!r}: days are 0-7 (0 and 7 are Sunday), ranges ascending")
        out.extend(_DAYS[d % 7] for d in range(first, last + 1, step))
    return ",".join(dict.fromkeys(out))  # `0,7` names Sunday once


def next_run(schedule: str, after: datetime) -> datetime:
    """When the schedule next starts a run after `after` (without jitter)."""
    if is_cron(schedule):
        return cron_trigger(schedule).get_next_fire_time(None, after) or after + timedelta(days=366)
    return after + parse_duration(schedule)


def period(schedule: str, at: datetime | None = None) -> float:
    """Seconds between two runs: the interval, or the gap between a cron's next two times after `at`."""
    if is_cron(schedule):
        first = next_run(schedule, at or datetime.now(timezone.utc))
        return (next_run(schedule, first + timedelta(seconds=1)) - first).total_seconds()
    return parse_duration(schedule).total_seconds()


def overdue(schedule: str, last_success: datetime | None, now: datetime) -> bool:
    """Whether a run was due while the daemon was not running."""
    if last_success is None:
        return True
    if is_cron(schedule):
        return next_run(schedule, last_success) <= now
    return now - last_success >= parse_duration(schedule)
