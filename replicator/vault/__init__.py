"""The vault: format (pure), crypto, keys, manifests, and the Vault that joins them to a store."""
