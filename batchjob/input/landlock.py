"""Filesystem and network confinement of a reading child, with Linux Landlock.

A child that reads an untrusted file may be taken over through a bug in a native reader.
Confined, it can then read the file it was given and Python's own installation (modules
load lazily), write only in its output's folder, and neither reach the network nor signal
other processes. Landlock needs no privileges (Linux 5.13 and newer); where the kernel lacks
it, or `BATCHJOB_WORKER_LANDLOCK=0`, the child runs with the other limits only.

The kernel interface is three system calls; no maintained Python binding covers it, so
this module calls them through ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER = 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_ALL = 0b11  # bind and connect TCP (ABI 4)
_SCOPE_ALL = 0b11  # abstract unix sockets and signals (ABI 6)
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock version; 0 when there is none (or it is turned off)."""
    if sys.platform != "linux" or os.environ.get("BATCHJOB_WORKER_LANDLOCK", "1") == "0":
        return 0
    return _kernel_abi()


@functools.cache
def _kernel_abi() -> int:
    try:
        v = _libc().syscall(_CREATE_RULESET, None, 0, _VERSION)
    except (OSError, AttributeError):
        return 0
    return max(0, int(v))


def prepare() -> None:
    """Look up once, in the process that forks the reading children, what every child's
    confinement needs: the C library, the kernel's version, Python's own folders. A child
    then spends its time on the system calls alone (~0.8 ms less per file)."""
    version = abi()
    _python_paths()
    if version:
        libc = _libc()
        _ = libc.syscall, libc.prctl  # ctypes looks a function up on its first use: here, once
        _ruleset_attr(version)


def confine(read: list[str], write_dir: str | None) -> bool:
    """Restrict this process for good: read `read` (files or folders, with Python's own
    installation added), write in `write_dir`. Returns False when Landlock is unavailable."""
    version = abi()
    if version == 0:
        return False
    libc = _libc()
    fs = _FS_BY_ABI.get(version, _FS_BY_ABI[5])
    attr = _ruleset_attr(version)
    ruleset = libc.syscall(_CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        return False
    try:
        readable = EXECUTE | READ_FILE | READ_DIR
        for path in read:
            _allow(libc, ruleset, path, readable)
        for path, is_dir in _python_paths():
            _allow(libc, ruleset, path, readable, is_dir)
        if write_dir:
            writable = READ_FILE | READ_DIR | WRITE_FILE | MAKE_REG | REMOVE_FILE | (TRUNCATE & fs)
            _allow(libc, ruleset, write_dir, writable)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return True


@functools.cache
def _ruleset_attr(version: int) -> bytes:
    """What a ruleset handles: every filesystem right the kernel knows, TCP (ABI 4) and
    the scopes (ABI 6): whatever is handled and not allowed by a rule is denied."""
    fs = _FS_BY_ABI.get(version, _FS_BY_ABI[5])
    if version >= 6:
        return struct.pack("QQQ", fs, _NET_ALL, _SCOPE_ALL)
    if version >= 4:
        return struct.pack("QQ", fs, _NET_ALL)
    return struct.pack("Q", fs)


@functools.cache
def _python_paths() -> tuple[tuple[str, bool], ...]:
    """Where this interpreter loads modules and native libraries from, and whether each is
    a folder. Fixed for the life of the process: looked up once."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p)
    paths.add(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # our package
    paths.update(("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache"))
    # A rule covers everything beneath its folder: a path inside another one needs none of
    # its own (each rule is a few system calls in every child). Compared resolved, as the
    # kernel sees them: a symbolic link inside a folder may lead out of it.
    real = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    kept: list[str] = []
    for p in real:
        if not any(p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return tuple((p, os.path.isdir(p)) for p in kept)


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, access: int, is_dir: bool | None = None) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there: nothing to allow
    try:
        if not (os.path.isdir(path) if is_dir is None else is_dir):
            access &= _FILE_RIGHTS
        rule = struct.pack("=Qi", access, fd)  # packed: allowed_access, parent_fd
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)
