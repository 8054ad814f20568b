"""`replicator [--config PATH] COMMAND`: parse, dispatch, and turn expected errors into one line and an exit code."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sqlite3
import sys
import threading

from replicator import __version__
from replicator.cli import (approve, check_config, daemon, init, key, ls, prune, restore, run, snapshots, status,
                            verify)
from replicator.cli.context import Context
from replicator.errors import EXIT_FATAL, ReplicatorError
from replicator.memory import reuse_large_buffers
from replicator.redact import redact

COMMANDS = [init, run, daemon, snapshots, ls, restore, verify, status, approve, key, prune, check_config]

DESCRIPTION = """\
Replicate buckets into an encrypted, append-only vault at another provider,
so that no single console can delete both the data and its backup.

Typical first use:
  replicator init            create the vault and its key file (keep a copy offline)
  replicator check-config    reach every endpoint read-only
  replicator run             copy what changed, record a snapshot
  replicator verify --deep   prove the vault complete and intact
  replicator restore JOB --to DIR --at 3d
"""

EPILOG = """\
TIME is ISO 8601 (2026-11-29T10:00:00Z) or an age: a number and s m h d w (90m, 3d).
Exit codes: 0 ok; 1 done, but something is wrong (failed objects, verify problems);
2 could not do the work (bad usage or config, wrong key, vault missing or unreachable).
The config is --config PATH, else $REPLICATOR_CONFIG, else /etc/replicator/config.toml.
"""


class _Parser(argparse.ArgumentParser):
    """Bad usage is an expected error too: one line and exit 2, with where to look."""

    def error(self, message: str):
        self.exit(EXIT_FATAL, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="replicator", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH", help="config file (TOML)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="log verbosity on stderr (default: info for daemon, warning otherwise)")
    p.add_argument("--log-format", default="text", choices=["text", "json"], help="log line format")
    p.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_FATAL
    _setup_logging(args.log_level or ("info" if args.command == "daemon" else "warning"), args.log_format)
    ctx = Context(args)
    try:
        return args.handler(args, ctx)
    except ReplicatorError as e:
        print(f"replicator: error: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except sqlite3.Error as e:  # the catalogue's disk is full, read-only or damaged
        print(f"replicator: error: the catalogue in the state directory failed: {e}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("replicator: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `replicator ls JOB | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def entry() -> None:
    """The `replicator` command (and `python -m replicator`): main(), then out without tearing the
    interpreter down. Exit handlers run (logging flushed, temporary directories removed) and
    output is flushed; what is skipped is freeing every object of every module one by one, which
    took 0.12 s after each command that loaded s3fs (issue 7). While a thread other than a daemon
    one still runs, the interpreter's own shutdown is left to wait for it."""
    reuse_large_buffers()
    try:
        rc = main()
    except SystemExit as e:  # argparse's usage errors, --help
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(rc)  # a thread still at work: the interpreter's own shutdown waits for it
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `replicator ls JOB | head`; a stream already closed
            pass
    os._exit(rc)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # Libraries log their own retries and tracebacks (gcsfs at ERROR); we report failures ourselves, in one
    # line each, so their logs are shown only when debugging.
    for noisy in ("botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "asyncssh", "azure", "urllib3", "fsspec",
                  "apscheduler", "libcloud"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)


class _TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record):
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        import json

        return redact(json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                                  "logger": record.name, "message": record.getMessage()}))
