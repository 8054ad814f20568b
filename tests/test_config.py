"""replicator.config and replicator.units: config parsing with key paths, secrets, times, globs."""

from __future__ import annotations

import re
import os
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator import config
from replicator.errors import ConfigError, SecretError
from replicator.redact import redact
from replicator.units import KeyFilter, glob_to_regex, parse_duration, parse_time

BASE = Path("/etc/replicator")

FULL = """
[vault]
url = "s3://backup-bucket/replicator"
key_file = "keys/vault.key"
[vault.options]
key = "env:REPL_TEST_KEY"
endpoint_url = "https://s3.example.net"

[state]
dir = "state"

[metrics]
listen = "127.0.0.1:9100"

[[jobs]]
name = "photos"
source = "gs://photos"
kind = "objects"
schedule = "*/15 * * * *"
include = ["**"]
exclude = ["tmp/**", "**/*.log"]
[jobs.source_options]
token = "file:/run/secrets/gcs"
project = "p1"

[[jobs]]
name = "code.repo_1"
source = "https://git.example.net/code.git"
kind = "git"
schedule = "6h"

[[jobs]]
name = "svn-3"
source = "svn://svn.example.net/repo"
kind = "svn"
"""

MIN = """
[vault]
url = "file:///srv/vault"
"""


def parse(text: str, base: Path = BASE) -> config.Config:
    return config.parse(text, base_dir=base)


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return e.value


def test_full_config(tmp_path):
    cfg = parse(FULL, tmp_path)
    assert cfg.vault.url == "s3://backup-bucket/replicator"
    assert cfg.vault.key_file == tmp_path / "keys" / "vault.key"
    assert cfg.vault.options == {"key": "env:REPL_TEST_KEY", "endpoint_url": "https://s3.example.net"}
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.metrics_listen == "127.0.0.1:9100"
    assert [j.name for j in cfg.jobs] == ["photos", "code.repo_1", "svn-3"]
    photos, code, svn = cfg.jobs
    assert (photos.source, photos.kind, photos.schedule) == ("gs://photos", "objects", "*/15 * * * *")
    assert photos.include == ("**",) and photos.exclude == ("tmp/**", "**/*.log")
    assert photos.source_options == {"token": "file:/run/secrets/gcs", "project": "p1"}  # not resolved here
    assert (code.kind, code.schedule, code.include, code.exclude, code.source_options) == ("git", "6h", ("**",), (), {})
    assert (svn.kind, svn.schedule) == ("svn", "1h")
    assert cfg.job("svn-3") is svn
    with pytest.raises(ConfigError, match="no job named 'nope'"):
        cfg.job("nope")


def test_minimal_config_defaults(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = parse(MIN)
    assert cfg.vault.key_file == Path("/etc/replicator/vault.key")
    assert cfg.state_dir == Path(config.DEFAULT_STATE_DIR)
    assert cfg.metrics_listen is None and cfg.jobs == () and cfg.vault.options == {}
    monkeypatch.setenv("STATE_DIRECTORY", "/run/state-from-systemd")
    assert parse(MIN).state_dir == Path("/run/state-from-systemd")


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir()
    path.write_text(MIN + 'key_file = "../secret/vault.key"\n[state]\ndir = "var/state"\n')
    cfg = config.load(path)
    assert cfg.vault.key_file == path.parent.resolve() / "../secret/vault.key"
    assert cfg.state_dir == path.parent.resolve() / "var" / "state"
    assert cfg.path == path
    absolute = parse(MIN + 'key_file = "/abs/k"\n[state]\ndir = "/abs/state"\n', tmp_path)
    assert (absolute.vault.key_file, absolute.state_dir) == (Path("/abs/k"), Path("/abs/state"))
    home = parse(MIN + 'key_file = "~/k"\n', tmp_path)
    assert home.vault.key_file == Path("~/k").expanduser()


def test_load_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "bin.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path)


JOB = '[[jobs]]\nname = "a"\nsource = "gs://a"\n'


@pytest.mark.parametrize("text,path", [
    ("", "vault"),
    ('[state]\ndir = "/x"\n', "vault"),
    ("vault = 5\n", "vault"),
    ("[vault]\n", "vault.url"),
    ('[vault]\nkey_file = "/k"\n', "vault.url"),
    ('[vault]\nurl = ""\n', "vault.url"),
    ("[vault]\nurl = 5\n", "vault.url"),
    (MIN + "bogus = 1\n", "vault.bogus"),
    ('bogus = 1\n' + MIN, "bogus"),
    (MIN + "[extra]\n", "extra"),
    (MIN + "options = 3\n", "vault.options"),
    (MIN + "[state]\ndir = 3\n", "state.dir"),
    (MIN + '[state]\nother = "x"\n', "state.other"),
    (MIN + '[state]\ndir = "~nosuchuser-xyz/state"\n', "state.dir"),
    ("state = []\n" + MIN, "state"),
    (MIN + JOB + JOB.replace('"a"', '"b"') + "colour = 1\n", "jobs[1].colour"),
    (MIN + JOB + "colour = 1\n", "jobs[0].colour"),
    (MIN + JOB + 'schedule = "*/0 * * * *"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "61 * * * *"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "* * * * * *"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "15x"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "0s"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "-5m"\n', "jobs[0].schedule"),
    (MIN + JOB + 'schedule = "99999999999999999999d"\n', "jobs[0].schedule"),
    (MIN + JOB + "schedule = 15\n", "jobs[0].schedule"),
    (MIN + JOB + 'kind = "ftp"\n', "jobs[0].kind"),
    (MIN + JOB + JOB, "jobs[1].name"),
    (MIN + JOB + JOB.replace('"a"', '"b"') + JOB, "jobs[2].name"),
    (MIN + JOB + 'include = "**"\n', "jobs[0].include"),
    (MIN + JOB + "include = [1]\n", "jobs[0].include"),
    (MIN + JOB + 'exclude = ["ok", "[z-a]"]\n', "jobs[0].exclude[1]"),
    (MIN + JOB + 'exclude = ["[unclosed"]\n', "jobs[0].exclude[0]"),
    (MIN + JOB + "source_options = 1\n", "jobs[0].source_options"),
    (MIN + '[[jobs]]\nsource = "gs://a"\n', "jobs[0].name"),
    (MIN + '[[jobs]]\nname = "a"\n', "jobs[0].source"),
    (MIN + '[[jobs]]\nname = "a"\nsource = ""\n', "jobs[0].source"),
    (MIN + '[[jobs]]\nname = "../etc"\nsource = "x"\n', "jobs[0].name"),
    (MIN + '[[jobs]]\nname = "a b"\nsource = "x"\n', "jobs[0].name"),
    (MIN + '[[jobs]]\nname = "a\\n"\nsource = "x"\n', "jobs[0].name"),
    (MIN + '[[jobs]]\nname = "' + "a" * 65 + '"\nsource = "x"\n', "jobs[0].name"),
    ("jobs = 5\n" + MIN, "jobs"),
    ("jobs = false\n" + MIN, "jobs"),
    ("jobs = [1]\n" + MIN, "jobs[0]"),
    (MIN + '[metrics]\nlisten = "9100"\n', "metrics.listen"),
    (MIN + '[metrics]\nlisten = "host:port"\n', "metrics.listen"),
    (MIN + '[metrics]\nlisten = "a b:80"\n', "metrics.listen"),
    (MIN + '[metrics]\nlisten = "host:99999"\n', "metrics.listen"),
    (MIN + '[metrics]\nlisten = "host:80\\n"\n', "metrics.listen"),
    (MIN + "[metrics]\nlisten = 9100\n", "metrics.listen"),
    (MIN + '[metrics]\nport = "1"\n', "metrics.port"),
])
def test_errors_name_the_key_path(text, path):
    e = error(text)
    assert e.path == path
    assert str(e).startswith(f"{path}: ")


@pytest.mark.parametrize("text", ["[vault", "a = ", "a = 1\na = 2\n", "[vault]\nurl = 'x'\n[vault]\n", "x = \"\\q\"",
                                  "a = " + "[" * 5000 + "]" * 5000])
def test_invalid_toml(text):
    e = error(text)
    assert e.path == "" and str(e).startswith("not valid TOML")


@pytest.mark.parametrize("schedule", ["*/15 * * * *", "0 3 * * mon-fri", "30s", "15m", "6h", "1d", "2w", " 15m "])
def test_schedules_accepted(schedule):
    assert parse(MIN + JOB + f'schedule = "{schedule}"\n').jobs[0].schedule == schedule


def test_metrics_listen_accepted():
    for listen in ("127.0.0.1:9100", ":9100", "localhost:65535", "0.0.0.0:1"):
        assert parse(MIN + f'[metrics]\nlisten = "{listen}"\n').metrics_listen == listen


def test_empty_jobs_array_is_fine():
    assert parse("jobs = []\n" + MIN).jobs == ()


# -- secrets ---------------------------------------------------------------------------------


def test_resolve_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("REPL_TEST_ENV_SECRET", "env-secret-value-1")
    (tmp_path / "s").write_text("file-secret-value-2\n")
    opts = {
        "key": "env:REPL_TEST_ENV_SECRET",
        "password": f"file:{tmp_path / 's'}",
        "plain": "raw:env:not-a-reference",
        "region": "eu-west-1",
        "port": 22,
        "nested": {"deeper": {"token": "env:REPL_TEST_ENV_SECRET"}, "flag": True},
        "list": ["raw:a", f"file:{tmp_path / 's'}", {"x": "env:REPL_TEST_ENV_SECRET"}, 3],
    }
    out = config.resolve_secrets(opts, "vault.options")
    assert out == {
        "key": "env-secret-value-1", "password": "file-secret-value-2", "plain": "env:not-a-reference",
        "region": "eu-west-1", "port": 22,
        "nested": {"deeper": {"token": "env-secret-value-1"}, "flag": True},
        "list": ["a", "file-secret-value-2", {"x": "env-secret-value-1"}, 3],
    }
    assert opts["key"] == "env:REPL_TEST_ENV_SECRET"  # the config's map is not changed
    masked = redact("connect with env-secret-value-1 and file-secret-value-2 to eu-west-1")
    assert masked == "connect with *** and *** to eu-west-1"


def test_signed_aws_request_credentials_are_masked():
    """What urllib3 and botocore log at debug level of a presigned URL and a signed request."""
    url = ("GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261129%2Fus-east-1"
           "&X-Amz-Security-Token=FQoGZXIvYXdzEJr&X-Amz-Signature=7db8749062f1a72f HTTP/1.1")
    headers = ("headers={'X-Amz-Security-Token': b'FQoGZXIvYXdzEJr', 'Authorization': b'AWS4-HMAC-SHA256 "
               "Credential=AKIDEXAMPLE/20261129/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=9f0e1d2c'}")
    masked = redact(url + " " + headers)
    for secret in ("AKIDEXAMPLE", "FQoGZXIvYXdzEJr", "7db8749062f1a72f", "9f0e1d2c"):
        assert secret not in masked
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in masked and "SignedHeaders=host" in masked


def test_literal_secrets_under_secret_names_are_masked():
    config.resolve_secrets({"secret_access_key": "literal-in-config-123", "connection_string":
                            "AccountName=acct;AccountKey=abcdefghijklmnop;EndpointSuffix=core"}, "vault.options")
    assert redact("x literal-in-config-123 y") == "x *** y"
    assert "abcdefghijklmnop" not in redact("key is abcdefghijklmnop")
    assert redact("name acct") == "name acct"  # short, non-secret fields are left alone


def test_missing_env_var_names_var_and_path_but_no_secret(monkeypatch):
    monkeypatch.setenv("REPL_TEST_PRESENT", "present-secret-value-3")
    monkeypatch.delenv("REPL_TEST_MISSING", raising=False)
    opts = {"a": "env:REPL_TEST_PRESENT", "b": {"c": ["raw:raw-secret-value-4", "env:REPL_TEST_MISSING"]}}
    with pytest.raises(SecretError) as e:
        config.resolve_secrets(opts, "jobs[2].source_options")
    msg = str(e.value)
    assert isinstance(e.value, ConfigError)
    assert msg.startswith("jobs[2].source_options.b.c[1]: ")
    assert "REPL_TEST_MISSING" in msg
    assert "present-secret-value-3" not in msg and "raw-secret-value-4" not in msg


def test_unreadable_secret_file(tmp_path):
    with pytest.raises(SecretError) as e:
        config.resolve_secrets({"k": f"file:{tmp_path / 'nope'}"}, "vault.options")
    assert str(e.value).startswith("vault.options.k: ") and "nope" in str(e.value)
    (tmp_path / "bin").write_bytes(b"\xff\xfe secret")
    with pytest.raises(SecretError) as e:
        config.resolve_secrets({"k": f"file:{tmp_path / 'bin'}"}, "vault.options")
    assert str(e.value).startswith("vault.options.k: ")
    with pytest.raises(SecretError):
        config.resolve_secrets({"k": f"file:{tmp_path}"}, "vault.options")


def test_option_pairs():
    assert config.parse_option_pairs(["a=1", "b=true", "c=x=y", "d=[1, 2]", "e=[bad"], "--to-option") == {
        "a": 1, "b": True, "c": "x=y", "d": [1, 2], "e": "[bad"}
    with pytest.raises(ConfigError, match="^--to-option: "):
        config.parse_option_pairs(["novalue"], "--to-option")


# -- times and durations -------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-29T10:00:00Z", datetime(2026, 11, 29, 10, tzinfo=timezone.utc)),
    ("2026-11-29T10:00:00.123456Z", datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-11-29T10:00:00+02:00", datetime(2026, 11, 29, 8, tzinfo=timezone.utc)),
    ("2026-11-29T10:00:00-05:30", datetime(2026, 11, 29, 15, 30, tzinfo=timezone.utc)),
    ("2026-11-29T10:00:00", datetime(2026, 11, 29, 10, tzinfo=timezone.utc)),
    ("2026-11-29", datetime(2026, 11, 29, tzinfo=timezone.utc)),
    (" 2026-11-29T10:00Z ", datetime(2026, 11, 29, 10, tzinfo=timezone.utc)),
    ("90m", NOW - timedelta(minutes=90)),
    ("3d", NOW - timedelta(days=3)),
    ("30s", NOW - timedelta(seconds=30)),
    ("2w", NOW - timedelta(weeks=2)),
])
def test_parse_time(text, expected):
    t = parse_time(text, now=NOW)
    assert t == expected and t.tzinfo == timezone.utc


@pytest.mark.parametrize("text", ["", "garbage", "yesterday", "3 days", "-3d", "3y", "2026-13-01", "2026-11-29T25:00Z",
                                  "2026-11-29T10:00:00+25:00", "99999999999999999999d", "999999999w",
                                  "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_parse_time_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_time(text, now=NOW)


def test_parse_time_default_now_is_utc():
    t = parse_time("0s")
    assert t.tzinfo is not None and abs(datetime.now(timezone.utc) - t) < timedelta(seconds=5)


offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
iso_times = st.builds(lambda t, off: t.replace(tzinfo=timezone(off)).isoformat(),
                      st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)), offsets)


@given(st.one_of(st.text(max_size=30), iso_times, st.datetimes().map(datetime.isoformat),
                 st.from_regex(r"\s*[0-9]{1,25}\s*[smhdw]\s*", fullmatch=True)))
@settings(max_examples=300, deadline=None)
def test_parse_time_raises_only_value_error(text):
    try:
        t = parse_time(text, now=NOW)
    except ValueError:
        return
    assert t.tzinfo == timezone.utc


def test_parse_duration():
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration(" 6 h ") == timedelta(hours=6)
    for bad in ("", "m", "1.5h", "15", "15 minutes", "1e3s", "99999999999999999999999w"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- globs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern,yes,no", [
    ("**", ["", "a", "a/b/c", ".hidden/x"], []),
    ("*", ["a", "a.txt", ""], ["a/b", "/a"]),
    ("*.txt", ["a.txt", ".txt"], ["d/a.txt", "a.txt/x", "a.txtx"]),
    ("docs/*", ["docs/a", "docs/"], ["docs/a/b", "docs", "xdocs/a"]),
    ("docs/**", ["docs/a", "docs/a/b/c", "docs/"], ["docs", "other/docs/a"]),
    ("tmp/**", ["tmp/x", "tmp/a/b.log"], ["tmp", "a/tmp/x", "tmpx/y"]),
    ("**/*.log", ["a.log", "x/a.log", "x/y/z/a.log"], ["a.log/x", "a.logs", "x/y"]),
    ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab", "a/b/c"]),
    ("?", ["a"], ["", "ab", "/"]),
    ("[ab]c", ["ac", "bc"], ["cc", "abc"]),
    ("[!ab]c", ["cc", "zc"], ["ac", "bc"]),
    ("a.b", ["a.b"], ["axb"]),
    ("(x)+", ["(x)+"], ["x", "xx"]),
    ("back\\slash", ["back\\slash"], ["backslash"]),
    ("line*", ["line\nbreak"], ["line/x"]),
    ("[[]x", ["[x"], ["x", "[[]x"]),  # class members are literal: no nested sets
    ("[&&|~]", ["&", "|", "~"], ["a"]),
    ("[a-c]", ["a", "b", "c"], ["d", "-"]),
    ("[^a]", ["b"], ["a"]),
])
def test_glob_to_regex(pattern, yes, no):
    r = glob_to_regex(pattern)
    for key in yes:
        assert r.match(key), (pattern, key)
    for key in no:
        assert not r.match(key), (pattern, key)


@pytest.mark.parametrize("pattern", ["[abc", "[z-a]", "[]", "[!]"])
def test_bad_globs_raise_value_error(pattern):
    with pytest.raises(ValueError):
        glob_to_regex(pattern)


@given(st.text(alphabet="az*?[]!/\\-^.(", max_size=12))
@settings(max_examples=300, deadline=None)
def test_glob_to_regex_raises_only_value_error(pattern):
    try:
        r = glob_to_regex(pattern)
    except ValueError:
        return
    assert isinstance(r, re.Pattern)


def test_key_filter():
    f = KeyFilter(("**",), ("tmp/**", "**/*.log"))
    assert f("a/b.txt") and f("tmp") and f("tmpx/a") and f("a/tmp/x")
    assert not f("tmp/x") and not f("tmp/a/b") and not f("x.log") and not f("a/b/x.log")
    only = KeyFilter(("photos/**", "*.jpg"), ())
    assert only("photos/2026/a.png") and only("a.jpg")
    assert not only("x/a.jpg") and not only("videos/a.mp4")
    assert not KeyFilter((), ())("anything")


# -- fuzz: config.parse raises only ConfigError ----------------------------------------------------

KEYS = ["vault", "url", "key_file", "options", "state", "dir", "metrics", "listen", "jobs", "name", "source",
        "kind", "schedule", "include", "exclude", "source_options", "bogus"]
STRINGS = ["", "x", "s3://b/p", "file:///v", "~", "~/k", "~nosuchuser-xyz/k", "objects", "git", "svn", "ftp",
           "*/15 * * * *", "* * * * *", "61 * * * *", "a b c d e", "15m", "0s", "99999999999999999999999d", "1h",
           "**", "tmp/**", "[z-a]", "[", "[]", "127.0.0.1:9100", ":0", "host:999999", "photos", "a\n", "../x",
           "env:NOPE", "\x7f", "é", "\U0001f600"]
RAW_TOKENS = ["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "inf", "-inf", "nan", "0x1F", "1e400", "[]", "{}"]


def toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)  # inf and -inf are TOML too
    if isinstance(v, str):
        return v[4:] if v.startswith("RAW:") else toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_doc(d: dict) -> str:
    """Scalars first, then [tables] and [[arrays of tables]] where the shape allows, else inline."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append(f"[{toml_str(k)}]\n" + "".join(f"{toml_str(k2)} = {toml_value(v2)}\n" for k2, v2 in v.items()))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                tables.append(f"[[{toml_str(k)}]]\n" + "".join(f"{toml_str(k2)} = {toml_value(v2)}\n" for k2, v2 in x.items()))
        else:
            lines.append(f"{toml_str(k)} = {toml_value(v)}\n")
    return "".join(lines) + "\n".join(tables)


scalars = (st.sampled_from(STRINGS) | st.text(max_size=12) | st.integers(-2**63, 2**63 - 1) | st.booleans()
           | st.floats(allow_nan=False, allow_infinity=True) | st.sampled_from(RAW_TOKENS).map(lambda t: "RAW:" + t))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), c, max_size=5),
                      max_leaves=20)
tables = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
job_tables = st.lists(tables, max_size=3)
documents = st.fixed_dictionaries({}, optional={
    "vault": st.one_of(tables, st.fixed_dictionaries({"url": st.sampled_from(STRINGS)}, optional={
        "key_file": values, "options": values, "bogus": values})),
    "state": st.one_of(tables, values), "metrics": st.one_of(tables, values), "jobs": st.one_of(job_tables, values),
    "bogus": values,
})
# Mostly-valid documents: each known field drawn from values that probe its own checks, so that
# the fuzz gets past the early fields to the later ones.
POOLS = {
    "url": ["s3://b/p", "", "file:///v"],
    "key_file": ["k", "~/k", "~", "~nosuchuser-xyz/k", "/abs/k", "", "a\x00b"],
    "dir": ["state", "~nosuchuser-xyz", "/var/lib/r", ""],
    "listen": ["127.0.0.1:9100", ":0", "host:999999", "h:65536", "x", "a:1\n", "[::1]:80", "h:٣"],
    "name": ["photos", "a", "a.b-c_d", "", "a b", "-x", "x" * 65, "é"],
    "source": ["gs://a", "", "svn://x"],
    "kind": list(config.KINDS) + ["ftp", ""],
    "schedule": ["*/15 * * * *", "61 * * * *", "a b c d e", "15m", "0s", "99999999999999999999999d", "1h",
                 "٣ * * * *", "* * * * mon-", "0 0 31 2 *", "*/99999999999999999999 * * * *", "* * * * 5#9",
                 "1-0 * * * *", "", "  ", "\x00 * * * *"],
    "include": [["**"], ["tmp/**", "**/*.log"], ["[z-a]"], ["[]"], ["[!]"], ["["], [""], []],
}


def field(name: str):
    pool = POOLS.get(name)
    return values if pool is None else st.one_of(st.sampled_from(pool), st.sampled_from(pool), values)


POOLS["exclude"] = POOLS["include"]
job_tables_valid = st.fixed_dictionaries(
    {"name": field("name"), "source": field("source")},
    optional={k: field(k) for k in ("kind", "schedule", "include", "exclude", "source_options", "bogus")})
job_docs = st.fixed_dictionaries(
    {"vault": st.fixed_dictionaries({"url": field("url")}, optional={"key_file": field("key_file"), "options": values}),
     "jobs": st.lists(job_tables_valid, min_size=1, max_size=3)},
    optional={"state": st.fixed_dictionaries({}, optional={"dir": field("dir")}),
              "metrics": st.fixed_dictionaries({}, optional={"listen": field("listen")})})


def _parse_only_config_errors(text: str) -> None:
    try:
        cfg = config.parse(text, base_dir=BASE)
    except ConfigError as e:
        # a key path (`jobs[0].schedule`, `vault.options`), or the TOML syntax error's line and column
        assert e.path and str(e).startswith(e.path + ": ") or str(e).startswith("not valid TOML:"), str(e)
        return
    assert cfg.vault.url and len({j.name for j in cfg.jobs}) == len(cfg.jobs)
    # What the CLI does next with the paths must not fail on them either (a NUL once got through).
    for path in (cfg.vault.key_file, cfg.state_dir, cfg.vault.url):
        assert "\0" not in str(path)


@given(st.one_of(documents, job_docs).map(toml_doc))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_parse_raises_only_config_error(text):
    _parse_only_config_errors(text)


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_config_raises_only_config_error(data):
    text = FULL
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(0, len(text)), label="at")
        j = data.draw(st.integers(i, min(len(text), i + 12)), label="to")
        text = text[:i] + data.draw(st.text(alphabet='[]"=.\n #\\*:/-' + string.ascii_lowercase + "0123456789",
                                            max_size=8), label="insert") + text[j:]
    _parse_only_config_errors(text)


def test_fuzz_helpers_write_valid_toml():
    import tomllib

    d = {"vault": {"url": "a\"b\\c\n\x7f"}, "jobs": [{"name": "x", "n": 1.5, "l": [True, {"k": "RAW:1979-05-27"}]}]}
    parsed = tomllib.loads(toml_doc(d))
    assert parsed["vault"]["url"] == "a\"b\\c\n\x7f"
    assert parsed["jobs"][0]["l"][1]["k"].isoformat() == "1979-05-27"


def test_a_nul_character_in_any_string_is_a_config_error():
    head = '[vault]\nurl = "/v"\n[[jobs]]\nname = "j"\nsource = "/tmp"\n'
    for text, key in ((head.replace('url = "/v"', 'url = "/v\\u0000x"'), "vault.url"),
                      (head + '[state]\ndir = "a\\u0000b"\n', "state.dir"),
                      (head.replace('url = "/v"', 'url = "/v"\nkey_file = "a\\u0000b"'), "vault.key_file")):
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: must not contain a NUL"):
            config.parse(text, base_dir=BASE)
