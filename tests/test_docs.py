"""What the README and the example config promise is true."""

import os
import subprocess
import sys
from pathlib import Path

from replicator import config

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_is_valid_and_complete():
    c = config.load(ROOT / "config.example.toml")
    assert c.vault.url and c.jobs and c.metrics_listen and c.notify.webhook
    assert c.jobs[0].retention.active and c.jobs[0].safety.enabled
    assert c.vault.bandwidth


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [l.strip() for l in (ROOT / "README.md").read_text().splitlines()]
    block = lines[lines.index("```sh") + 1: lines.index("```sh") + 3]
    assert block[0].startswith("scripts/demo") and block[1].startswith("scripts/test")
    assert all((ROOT / cmd.split()[0]).exists() for cmd in block)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_the_demo_runs_and_restores_the_bucket_as_it_was_before_the_attack(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True,
                       env={**os.environ, "DEMO_DIR": str(tmp_path / "demo")}, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "breaker tripped" in p.stdout and "vault OK" in p.stdout
    assert "every key and byte identical to the bucket before the attack" in p.stdout
