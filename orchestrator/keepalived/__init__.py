"""What orch knows of keepalived: its configuration file (``conf``), the track file orch
writes to hand the VIP over (``track``), the events it sends (``events``) and the health
check it runs (``health``).

Kept empty: the notify hook imports ``events`` through this package, and must load
nothing else of it.
"""
