"""Shared pytest fixtures."""

import os

# Before anything imports gcsfs/botocore: without the first, every gcsfs call
# stalls ~60 s on the emulator; the second replaces region_name (TEST-SERVERS.md).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import pytest  # noqa: E402

import servers  # noqa: E402  (tests/ is on sys.path: pytest rootdir-less conftest)
# Every session ends with the secrets scan of every CLI output and log it recorded (autouse).
from secrets_scan import scan_outputs_for_secrets  # noqa: E402,F401


# ---------------------------------------------------------------------------
# Real storage servers (tests/servers.py): one per session, on 127.0.0.1.
# A server that fails to start raises, so tests using it ERROR (never skip).
# ---------------------------------------------------------------------------


def _serve(start):
    server = start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> "servers.S3Server":
    """moto S3; ``.fsspec_options()`` for ``fsspec.filesystem("s3", ...)``."""
    yield from _serve(servers.start_s3)


@pytest.fixture(scope="session")
def gcs_server() -> "servers.GCSServer":
    """fake-gcs-server; ``.fsspec_options()`` for ``fsspec.filesystem("gcs", ...)``."""
    yield from _serve(servers.start_gcs)


@pytest.fixture(scope="session")
def azure_server() -> "servers.AzureServer":
    """Azurite blob; ``.fsspec_options()`` for ``fsspec.filesystem("abfs", ...)``."""
    yield from _serve(servers.start_azure)


@pytest.fixture(scope="session")
def sftp_server() -> "servers.SFTPServer":
    """OpenSSH sshd; ``.fsspec_options()`` for ``fsspec.filesystem("sftp", ...)``."""
    yield from _serve(servers.start_sftp)
