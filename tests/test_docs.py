"""What the README and the example config promise is true."""

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
