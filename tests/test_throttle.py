"""The bandwidth limit: rates, time-of-day windows, and the token bucket on a fake clock."""

from datetime import datetime

import pytest

from replicator.stores.throttle import BandwidthSchedule, TokenBucket, parse_rate


def test_rates():
    assert parse_rate("50MiB/s") == 50 * 2**20
    assert parse_rate("500KB/s") == 500_000
    assert parse_rate("off") is None
    for bad in ("50", "fast", "0MiB/s", "-1MiB/s", "5 MiB"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_time_of_day_windows_first_match_wins_and_wrap_midnight():
    s = BandwidthSchedule.parse(["08:00-18:00 10MiB/s", "22:00-06:00 off", "50MiB/s"])
    assert s.rate(datetime(2026, 1, 1, 9, 30)) == 10 * 2**20
    assert s.rate(datetime(2026, 1, 1, 18, 0)) == 50 * 2**20
    assert s.rate(datetime(2026, 1, 1, 23, 0)) is None
    assert s.rate(datetime(2026, 1, 1, 3, 0)) is None
    assert BandwidthSchedule.parse("1MiB/s").rate() == 2**20


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_token_bucket_holds_the_average_rate():
    clock = FakeClock()
    bucket = TokenBucket(lambda: 1000.0, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        bucket.consume(200)  # 10,000 bytes at 1,000 B/s
    assert 9.0 <= clock.t <= 10.5


def test_unlimited_never_sleeps():
    clock = FakeClock()
    TokenBucket(lambda: None, clock=clock, sleep=clock.sleep).consume(10**9)
    assert clock.t == 0


def test_config_rejects_a_bad_bandwidth(tmp_path):
    from replicator.config import parse
    from replicator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^vault.bandwidth: "):
        parse('[vault]\nurl = "/x"\nbandwidth = "lots"\n', tmp_path)
    c = parse('[vault]\nurl = "/x"\nbandwidth = ["08:00-18:00 10MiB/s", "off"]\n', tmp_path)
    assert c.vault.bandwidth == ("08:00-18:00 10MiB/s", "off")
