"""Named crash points for the crash tests: `BJB_CRASH_AT=<name>` kills this process there.

Unset (always, outside those tests) a point costs one string comparison. The process dies
by SIGKILL, as from `kill -9`: no cleanup, no flush, no finally blocks.
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("BJB_CRASH_AT") or None


def point(name: str) -> None:
    if _AT is not None and name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
