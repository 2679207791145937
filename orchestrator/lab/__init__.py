"""The sandbox: local labs for `orch lab`, the tests and the benchmarks (no other orch command).

A lab is two hosts, ``server1`` and ``server2``, each running mariadbd, an Atlas
stand-in and ``orch maintain``. ``netns.py`` puts each host in a network namespace with
keepalived; ``loopback.py`` runs both on 127.0.0.1 and delivers keepalived's events
itself. What both share is in ``base.py``; ``sandbox.py`` finds the lab a directory holds.
Below them: ``proc`` (every subprocess), ``mariadb`` (throwaway servers), ``hosts`` (a
host's files), ``probes`` (how the lab sees its servers), ``traffic`` (the writer) and
``atlas_standin`` (the Atlas imitation).
"""

from orchestrator.errors import OrchError


class LabError(OrchError):
    """The lab could not be built, or is not in the state a caller waited for."""
