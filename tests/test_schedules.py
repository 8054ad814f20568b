"""Cron schedules as cron runs them: with both the day of month and the day of week restricted,
a day matching either runs (APScheduler's CronTrigger alone would need both)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from replicator import schedules

UTC = timezone.utc


def fire_times(schedule: str, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = schedules.next_run(schedule, after)
        out.append(after)
        after += timedelta(seconds=1)
    return out


def test_day_of_month_or_day_of_week():
    times = fire_times("0 3 1 * 1", datetime(2026, 6, 2, tzinfo=UTC), 7)
    assert [t.strftime("%a %d") for t in times] == ["Mon 08", "Mon 15", "Mon 22", "Mon 29", "Wed 01", "Mon 06", "Mon 13"]
    assert all(t.hour == 3 and t.minute == 0 for t in times)
    # after Monday the 29th: Wednesday the 1st, then Monday the 6th
    assert schedules.period("0 3 1 * 1", datetime(2026, 6, 29, 4, tzinfo=UTC)) == 5 * 86400
    assert schedules.overdue("0 3 1 * 1", datetime(2026, 6, 29, 4, tzinfo=UTC), datetime(2026, 7, 1, 3, 0, 1, tzinfo=UTC))
    assert not schedules.overdue("0 3 1 * 1", datetime(2026, 6, 29, 4, tzinfo=UTC), datetime(2026, 7, 1, 2, tzinfo=UTC))
    schedules.validate("0 3 1,15 * mon-fri")
    # names, lists and Sunday as 0 in the day-of-week half of the OR
    assert [t.strftime("%a %d") for t in fire_times("30 2 15 * 0", datetime(2026, 7, 1, tzinfo=UTC), 4)] == \
        ["Sun 05", "Sun 12", "Wed 15", "Sun 19"]


def test_a_day_field_starting_with_a_star_does_not_restrict_so_both_must_match():
    """Cron's rule: a field starting with `*` (here `*/2`) makes the two day fields combine with AND."""
    times = fire_times("0 3 */2 * 1", datetime(2026, 6, 1, 4, tzinfo=UTC), 3)
    assert all(t.strftime("%a") == "Mon" and t.day % 2 == 1 for t in times), times
    assert [t.strftime("%a") for t in fire_times("0 3 1 * *", datetime(2026, 6, 2, tzinfo=UTC), 2)] == ["Wed", "Sat"]


def test_the_daemons_trigger_keeps_the_or_and_its_jitter():
    from replicator.daemon import MAX_JITTER, trigger_for

    trigger = trigger_for("0 3 1 * 1")
    after = datetime(2026, 6, 29, 4, tzinfo=UTC)  # Monday after the run: next is Wednesday the 1st
    for _ in range(20):
        t = trigger.get_next_fire_time(None, after)
        assert datetime(2026, 7, 1, 3, tzinfo=UTC) <= t <= datetime(2026, 7, 1, 3, tzinfo=UTC) + timedelta(seconds=MAX_JITTER)
