"""The line every benchmark prints first: what it ran on and how busy the machine was."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    load = tuple(round(x, 2) for x in os.getloadavg())
    return (
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average {load}"
    )
