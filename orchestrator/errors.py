"""The project's exceptions. Each maps to an exit code in the CLI; messages are one line
and never contain secrets."""


class OrchError(Exception):
    """Base for every error the orchestrator reports to a user (exit 1)."""

    exit_code = 1


class UsageError(OrchError):
    """Bad command-line arguments (exit 2)."""

    exit_code = 2


class ConfigError(OrchError):
    """The configuration is invalid; carries every problem found."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# How a server failed to answer (DatabaseError.kind): only DOWN means it cannot take writes.
DOWN = "down"  # refused, unroutable, or no handshake within connect_timeout
ALIVE = "alive"  # it answered, but unusably: access denied, too many connections, a slow statement
LOST = "lost"  # an open connection broke mid-statement: connect again to tell which


class DatabaseError(OrchError):
    """A MySQL/MariaDB server could not be reached or rejected a statement."""

    def __init__(self, message: str, kind: str = ALIVE, code: int = 0) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


class AtlasError(OrchError):
    """An Atlas admin port could not be reached or rejected a command."""


class CommandError(OrchError):
    """A subprocess failed; carries argv (never secrets), exit code and output."""


class Refused(OrchError):
    """A plan was refused for safety (errant GTIDs, catch-up timeout, replication error)."""


class CatchUpRefused(Refused):
    """A promotion refused because its node had not applied everything in time: the
    maintainer retries it as soon as it has (invariants.caught_up)."""


class LockBusy(OrchError):
    """Another orch run holds the lock."""
