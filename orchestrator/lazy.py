"""Import a module while some of the modules it imports are put off until first used.

keepalived's notify hook is write downtime from its first instruction, and some of what
Python and PyMySQL import at start-up is used only on paths a failover rarely takes:
``ssl`` (~6 ms with OpenSSL's libraries) only when a server offers TLS, ``traceback``
(with linecache, tokenize and textwrap, ~3 ms) only to format an error, ``inspect`` only
for a dataclass without a docstring, ``copy`` only for ``dataclasses.asdict``.

``deferred("ssl", "traceback")`` makes an ``import ssl`` inside the block bind a stand-in
whose first attribute access imports the real module and answers from it, so behaviour is
unchanged; it only moves the cost to the first use, which on the hook's path never comes.
On leaving the block the stand-ins leave ``sys.modules``: every later ``import`` gets the
real module. Only top-level module names; meant for the main thread before any other
thread imports (the hook imports these before it starts its observer threads).
"""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterator


class Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is needed, then imports it."""

    def __getattr__(self, name: str) -> Any:
        module = sys.modules.get(self.__name__)
        if module is None or module is self:
            if module is self:  # still inside the block: let the import below load the real one
                del sys.modules[self.__name__]
            module = __import__(self.__name__)
        return getattr(module, name)


@contextmanager
def deferred(*names: str) -> Iterator[None]:
    """Within the block, ``import NAME`` of a module not yet loaded binds a :class:`Deferred`."""
    stand_ins = {}
    for name in names:
        if name not in sys.modules:
            stand_ins[name] = sys.modules[name] = Deferred(name)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


class Pattern:
    """``re.compile(text, flags)`` on first use (compiling is ~0.1-0.4 ms a pattern at import,
    for patterns a given failover mostly never uses); then the compiled pattern's methods."""

    def __init__(self, text: str, flags: int = 0) -> None:
        self._text, self._flags = text, flags

    def __getattr__(self, name: str) -> Any:
        import re

        value = getattr(re.compile(self._text, self._flags), name)
        setattr(self, name, value)  # the bound method, from now on found without __getattr__
        return value
