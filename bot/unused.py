"""Packages the bot's libraries load when they are installed, which the bot never uses.

An idle bot's memory is mostly the code it imported. Two optional imports cost more than
they give here:

- `cryptography` (installed for the MCP client's JWT support): python-telegram-bot imports
  it for Telegram Passport decryption, redis-py to know whether OCSP checks are possible, and
  PyJWT for RSA/EC keys. Every one of them treats it as optional, and the bot uses none of
  those features; its native module alone is 8 MiB resident.
- `click` (installed for uvicorn's command line): `import httpx` tries its own command line,
  which imports click (and pygments and rich, when present) only to find it cannot run.

Marking a module None in `sys.modules` is Python's own way of saying "not installed": the
import raises ImportError, which each of these libraries expects. `click` is hidden only
while httpx is imported, since uvicorn needs it later.
"""

from __future__ import annotations

import sys

# Optional for every library that imports it; see above.
NEVER_USED = ("cryptography",)
# Hidden only while `httpx` is imported: its command line's imports.
HTTPX_CLI = ("click", "pygments", "rich")


def keep_out() -> None:
    """Call before the bot's libraries are imported; later calls change nothing."""
    for name in NEVER_USED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    if "httpx" in sys.modules:
        return
    hidden = [n for n in HTTPX_CLI if n not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
