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


def test_config_refuses_a_rate_too_low_to_move_a_chunk_and_an_empty_window(tmp_path):
    """"0.001B/s" would stall the daemon on its first blob; "08:00-08:00" never matches."""
    from replicator.config import parse
    from replicator.errors import ConfigError

    for value, why in (('"0.001B/s"', "below the minimum of 1KiB/s"),
                       ('["08:00-18:00 1000B/s", "off"]', "below the minimum of 1KiB/s"),
                       ('["08:00-08:00 1MiB/s", "off"]', "is empty"),
                       ('"08:00-08:00 1MiB/s"', "is empty")):
        with pytest.raises(ConfigError) as e:
            parse(f'[vault]\nurl = "/x"\nbandwidth = {value}\n', tmp_path)
        assert str(e.value).startswith("vault.bandwidth: ") and why in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    assert parse('[vault]\nurl = "/x"\nbandwidth = ["00:00-24:00 1KiB/s"]\n', tmp_path).vault.bandwidth
    assert parse('[vault]\nurl = "/x"\nbandwidth = "1KiB/s"\n', tmp_path).vault.bandwidth == "1KiB/s"


def test_release_lifts_the_limit_also_for_a_transfer_waiting_on_it():
    """A graceful stop: a put queued behind the limit goes at once, and so do later ones."""
    import threading

    bucket = TokenBucket(lambda: 1024.0)
    waiting = threading.Thread(target=bucket.consume, args=(10**9,), daemon=True)  # ~11 days at 1 KiB/s
    waiting.start()
    bucket.release()
    waiting.join(timeout=300)
    assert not waiting.is_alive()
    clock = FakeClock()
    later = TokenBucket(lambda: 1024.0, clock=clock, sleep=clock.sleep)
    later.release()
    later.consume(10**9)
    assert clock.t == 0


# ---------------------------------------------------------------------------------------------
# End to end: a run through `replicator run`, measured
# ---------------------------------------------------------------------------------------------

KiB = 1024


def vault_bytes(vault) -> int:
    return sum(f.stat().st_size for f in vault.rglob("*") if f.is_file())


def test_a_limited_run_takes_at_least_the_time_the_limit_implies_and_no_worker_process_multiplies_it(tmp_path):
    """~3 MiB at 512 KiB/s with `[engine] processes = 2` asked for: one process (each worker would open
    its own throttled vault and get the whole limit), and at least bytes/rate less one second of burst.
    A lower bound only: a loaded machine can only make it slower."""
    import os
    import time

    from project import Project, read_dir

    src = tmp_path / "src"
    for i in range(300):
        (src / f"d{i % 3}" / f"f{i:03d}").parent.mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i:03d}").write_bytes(os.urandom(10 * KiB))
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "files", "source": str(src)}])
    p.write_config()
    rate = 512 * KiB
    p.config.write_text(p.config.read_text().replace('key_file = "vault.key"', 'key_file = "vault.key"\nbandwidth = "512KiB/s"')
                        + "\n[engine]\nprocesses = 2\n")
    p.cli("init")
    before = vault_bytes(tmp_path / "vault")
    t0 = time.monotonic()
    r = p.cli("--log-level", "info", "run")
    elapsed = time.monotonic() - t0
    written = vault_bytes(tmp_path / "vault") - before
    assert "worker processes" not in r.stderr, r.stderr
    assert written > 3000 * KiB
    assert elapsed >= written / rate - 1.0, (elapsed, written)
    # a restore with a limit: threads too, and the same files
    p.config.write_text(p.config.read_text().replace('"512KiB/s"', '"64MiB/s"'))
    back = p.cli("--log-level", "info", "restore", "files", "--to", str(tmp_path / "out"))
    assert "a vault bandwidth limit is set: threads restore" in back.stderr, back.stderr
    assert read_dir(tmp_path / "out") == read_dir(src)
