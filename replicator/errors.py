"""The error tree. Each error carries its exit code and whether a retry may help.

Expected errors are printed as one line, never with a traceback; anything else
is a programming error and fails loudly.
"""

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command did its work, but something is wrong
EXIT_FATAL = 2  # the command could not do its work at all


class ReplicatorError(Exception):
    """Base of all expected errors."""

    exit_code = EXIT_FATAL
    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ReplicatorError):
    """Bad command-line usage."""


class ConfigError(ReplicatorError):
    """Bad configuration; the message starts with the key path (`jobs[0].schedule: ...`)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class SecretError(ConfigError):
    """A secret reference (env:/file:) cannot be resolved; never includes the value."""


class StoreError(ReplicatorError):
    """A store (vault or restore target) failed."""

    retryable = True


class StoreUnreachable(StoreError):
    """The endpoint does not answer or refuses our credentials."""


class NotFound(StoreError):
    """The named object does not exist."""

    retryable = False


class AlreadyExists(StoreError):
    """A create-only write found the name taken."""

    retryable = False


class SourceError(ReplicatorError):
    """A source could not be listed or read."""

    retryable = True


class SourceChanged(SourceError):
    """A source object changed or vanished while it was being read."""


class VaultError(ReplicatorError):
    """The vault is missing, already exists, or cannot be opened."""


class SnapshotTaken(VaultError):
    """Another writer stored a different root under the snapshot number this host committed."""


class WrongKey(VaultError):
    """The key file does not open this vault."""


class PrivateKeyNeeded(WrongKey):
    """A write-only vault's content was asked for without its private key (`--key PATH`)."""


class IntegrityError(ReplicatorError):
    """Stored data failed authentication or does not match what refers to it."""

    exit_code = EXIT_PROBLEMS


class LockedError(ReplicatorError):
    """Another replicator process holds the lock."""
