"""What commands share: the loaded config, opening the vault and catalogue, and output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from replicator import config as configmod
from replicator.config import Config

if TYPE_CHECKING:  # each command imports only what it uses: `--help` and light commands start fast
    from replicator.catalogue import Catalogue
    from replicator.stores import Store
    from replicator.vault.vault import Vault


@dataclass
class Context:
    args: Any
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = configmod.load(configmod.config_path(self.args.config))
        return self._config

    def vault_store(self) -> Store:
        from replicator.stores import open_store

        v = self.config.vault
        return open_store(v.url, configmod.resolve_secrets(v.options, "vault.options"), v.bandwidth, v.immutability)

    def open_vault(self, key_path: str | None = None) -> Vault:
        from pathlib import Path

        from replicator.vault.keys import load_key_file
        from replicator.vault.vault import Vault

        key = load_key_file(Path(key_path) if key_path else self.config.vault.key_file)
        return Vault.open(self.vault_store(), key)

    def catalogue(self) -> Catalogue:
        from replicator.catalogue import Catalogue

        return Catalogue(self.config.state_dir / "catalogue.db")

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def emit(self, data: Any, human: str) -> None:
        """Print either JSON (for scripts) or the human text."""
        if self.json:
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        elif human:
            print(human)

    @staticmethod
    def say(text: str) -> None:
        """Progress and notes for humans go to stderr, so stdout stays parseable."""
        print(text, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
