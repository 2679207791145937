"""atlas-orchestrator: failover for the two-node MySQL/MariaDB + keepalived + Atlas topology."""

__version__ = "0.1.0"
