"""The project's exceptions and exit codes. Each exception maps to an exit code in the CLI;
messages are one line and never contain secrets."""

# Every exit code orch uses: docs/cli.md's "Exit codes" table lists exactly these
# (tests/test_exit_codes.py holds the two equal and runs each through the CLI).
EXIT_OK = 0  # done, or nothing to do
EXIT_FAILED = 1  # refused or failed, nothing unsafe done; a check or a configuration that does not pass
EXIT_USAGE = 2  # bad input on the command line: arguments, a config file that cannot be read, --node
EXIT_INCOMPLETE = 3  # safe but incomplete: waiting for the peer, or an event handed to the maintainer
EXIT_BUG = 70  # an unexpected error (a bug): the traceback is in the log
EXIT_INTERRUPTED = 130  # Ctrl-C

# The man page's EXIT STATUS (orch man): one line per code above.
MEANING = {
    EXIT_OK: "done, or nothing to do",
    EXIT_FAILED: "refused or failed, nothing unsafe done; a check or a configuration that does not pass",
    EXIT_USAGE: "bad input on the command line: arguments, a config file that cannot be read, --node",
    EXIT_INCOMPLETE: "safe but incomplete: waiting for the peer, or an event handed to the maintainer",
    EXIT_BUG: "an unexpected error (a bug): the traceback is in the log",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class OrchError(Exception):
    """Base for every error the orchestrator reports to a user (exit 1)."""

    exit_code = EXIT_FAILED


class UsageError(OrchError):
    """Bad command-line arguments (exit 2)."""

    exit_code = EXIT_USAGE


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


class TokenRefused(Refused):
    """A promotion refused because the write token is held by the peer (etcd: configured): the
    maintainer retries it as soon as a pass sees the token free (pass_choice.still_refused)."""


class LockBusy(OrchError):
    """Another orch run holds the lock."""
