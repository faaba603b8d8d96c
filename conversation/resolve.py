"""Turn a URL or a local path into a local file, safely.

URLs: `batchjob.fetch` (public addresses only, checked on every redirect, capped). Local
paths: only inside configured roots, after resolving symlinks; no NUL, no directories; the
file is copied into the media directory, so cleaning up never touches the original.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from batchjob.fetch import FetchError as ResolveError
from batchjob.fetch import fetch_url

__all__ = ["ResolveError", "fetch_url", "open_path"]


def open_path(raw: str, roots: list[Path], dest: Path, max_bytes: int) -> tuple[Path, str]:
    """Copy an allowed local file into `dest`; returns (dest, its name).

    A path outside the roots, a path that does not exist and one that is not a readable
    regular file all get the same answer, `path_refused`: the bot is no oracle for what
    exists on its host."""
    if not roots or "\x00" in raw or not raw.strip():
        raise ResolveError("path_refused")
    try:
        real = Path(raw).resolve(strict=True)
        allowed = any(_inside(real, root) for root in roots)
        if not allowed:
            raise ResolveError("path_refused")
        # Opened without following a link that appeared since `resolve`, then judged by
        # what was opened, not by a second look at the path.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except (OSError, RuntimeError):
        raise ResolveError("path_refused") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ResolveError("path_refused")
    with os.fdopen(fd, "rb") as src:
        if st.st_size > max_bytes:
            raise ResolveError("url_too_large")
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return dest, real.name


def _inside(real: Path, root: Path) -> bool:
    try:
        return real.is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError):
        return False
