"""The Atlas stand-in: an imitation of Atlas 2.2.1's admin port for the lab and the tests.

Never imported by orch itself: the product talks to Atlas only through
``orchestrator/atlas/`` (admin client, config file, apply, observe).
"""
