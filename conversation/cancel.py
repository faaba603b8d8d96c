"""Loops that retry on errors must still end when their task is cancelled.

A library may catch the CancelledError that stops a command half-way and raise another
error in its place (a dropped connection reported as a ConnectionError, say). A loop that
logs and retries such errors would then never end, and whoever awaits it hangs.
`asyncio.Task.cancelling()` still counts the request.
"""

from __future__ import annotations

import asyncio


def check_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop (call it where a loop
    handles an error and would carry on)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
