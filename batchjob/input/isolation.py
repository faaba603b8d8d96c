"""Untrusted files are read in the parse worker, never in this process.

`inspect_file` and `convert_file` (and their async twins) hand the file to the worker
(`batchjob.input.worker`) and wait for its report; the bot, `batchjob submit` and the
sandbox call these, and `batchjob inspect`/`convert` call `read_in_child`; nothing calls
the pipeline directly. A native reader can abort, panic, hang or exhaust
memory on a crafted file, and nothing in Python can catch an abort: in the worker's child
it costs that child only, and comes back as a file-level problem (`limit_memory`,
`limit_parse_time`, `file_unreadable`).

One worker per process, started on first use with a scrubbed environment: no tokens or
other settings of ours reach it, only what Python and the readers need. If the worker
itself dies (it never opens a file, so something killed it), the requests in flight get
`worker_unavailable` and the next request starts a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from pathlib import Path
from typing import IO

import orjson

from batchjob.input.limits import Limits
from batchjob.input.report import Issue, Report, collector_paused
from batchjob.input.worker import Zygote, kept_environment

log = logging.getLogger("batchjob.input")

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
BACKSTOP_S = 30.0  # past the worker's own kill time: the worker itself is stuck


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = kept_environment(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


PathLike = str | os.PathLike[str]


def _request(
    op: str, path: PathLike, out: PathLike | None, skip: bool, limits: Limits, rows: str = ""
) -> dict[str, object]:
    return {
        "op": op,
        "path": os.path.abspath(path),
        "out": os.path.abspath(out) if out is not None else None,
        "skip_invalid": skip,
        "rows": rows,
        "limits": asdict(limits),
    }


def _report(path: str, code: str, **params: object) -> Report:
    return Report(path=path, fatal=Issue(code, params=dict(params)))


def _report_of(answer: dict[str, object], path: str) -> Report:
    """The answer's report. The reading child wrote it, and a child taken over by a crafted
    file may write any shape: then the file is unreadable (its request still gets an answer,
    rather than a wait for the backstop that ends every parse in flight)."""
    try:
        return Report.from_wire(answer["report"])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("a reading child answered in a shape that is not a report")
        return _report(path, "file_unreadable")


def _settle(fut: Future[Report], report: Report) -> None:
    with contextlib.suppress(InvalidStateError):  # cancelled by a caller that gave up
        fut.set_result(report)


class ParseWorker:
    """The parent's handle on one worker process: thread-safe, restarts it when it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the process handle and the requests in flight
        self._write = threading.Lock()  # one request at a time into the pipe, never under _lock
        self._proc: subprocess.Popen[bytes] | None = None
        # Requests in flight: id -> (future, path, the worker process it went to).
        self._pending: dict[int, tuple[Future[Report], str, subprocess.Popen[bytes]]] = {}
        self._next = 0

    def submit(
        self,
        op: str,
        path: PathLike,
        out: PathLike | None,
        *,
        skip_invalid: bool = False,
        limits: Limits,
        rows: str = "",
    ) -> Future[Report]:
        fut: Future[Report] = Future()
        request = _request(op, path, out, skip_invalid, limits, rows)
        spath = str(request["path"])
        with self._lock:
            self._next += 1
            rid = request["id"] = self._next
            try:
                proc = self._ensure()
            except OSError:
                proc = None
            if proc is not None:
                self._pending[rid] = (fut, spath, proc)
        if proc is None:
            log.warning("parse worker cannot be started")
            fut.set_result(_report(spath, "worker_unavailable"))
            return fut
        # Written outside _lock: while the pipe is full, the reader must still be able to
        # take answers (the worker reads requests only between writing answers).
        try:
            with self._write:
                assert proc.stdin is not None
                proc.stdin.write(orjson.dumps(request) + b"\n")
                proc.stdin.flush()
        except (OSError, ValueError):  # the worker died (its reader fails what was pending)
            with self._lock:
                entry = self._pending.pop(rid, None)
            if entry is not None:
                _settle(fut, _report(spath, "worker_unavailable"))
        return fut

    def start(self) -> int:
        """Start the worker now rather than on the first file; its pid."""
        with self._lock:
            return self._ensure().pid

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchjob.input.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=worker_env(),
            cwd="/",
            start_new_session=True,  # a Ctrl-C meant for us does not end a parse half-way
        )
        self._proc = proc
        assert proc.stdout is not None
        threading.Thread(
            target=self._read, args=(proc, proc.stdout), name="parse-worker", daemon=True
        ).start()
        return proc

    def _read(self, proc: subprocess.Popen[bytes], stdout: IO[bytes]) -> None:
        for line in stdout:
            try:
                with collector_paused():
                    answer = orjson.loads(line)
                rid = int(answer["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("parse worker answered something unreadable")
                continue
            with self._lock:
                entry = self._pending.pop(rid, None)
            if entry is not None:
                _settle(entry[0], _report_of(answer, entry[1]))
        # The worker is gone: what it had not answered will never be answered.
        with self._lock:
            if self._proc is proc:
                self._proc = None
            lost = [rid for rid, entry in self._pending.items() if entry[2] is proc]
            entries = [self._pending.pop(rid) for rid in lost]
        proc.wait()
        for fut, path, _ in entries:
            _settle(fut, _report(path, "worker_unavailable"))

    def kill(self) -> None:
        """Stop the worker (stuck, or at exit); requests in flight get `worker_unavailable`."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def close(self, wait: float = 5.0) -> None:
        """Let the worker finish what it has and exit; waited for (so that its resource
        use counts as ours), killed if it does not end within `wait` seconds."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


_worker: ParseWorker | None = None
_worker_lock = threading.Lock()


def worker() -> ParseWorker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = ParseWorker()
            atexit.register(_worker.close)
        return _worker


def _wait(fut: Future[Report], path: PathLike, limits: Limits) -> Report:
    try:
        return fut.result(timeout=limits.max_parse_seconds + BACKSTOP_S)
    except FutureTimeout:
        worker().kill()
        return _report(os.path.abspath(path), "limit_parse_time", limit=limits.max_parse_seconds)


def read_in_child(
    op: str,
    path: PathLike,
    out: PathLike | None = None,
    *,
    skip_invalid: bool = False,
    limits: Limits | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> Report:
    """Read one file in a child forked from this process, with the worker's limits;
    `meanwhile` runs here as the child reads.

    For a short-lived, single-threaded caller that holds no secret in memory (the CLI's
    inspect and convert): it saves starting a worker process. The child's environment is
    scrubbed as the worker's is. Anything else uses the worker."""
    request = {"id": 0, **_request(op, path, out, skip_invalid, limits or Limits())}
    return _report_of(Zygote(1).run_one(request, meanwhile), str(request["path"]))


def inspect_file(path: PathLike, limits: Limits | None = None) -> Report:
    """`pipeline.inspect_file`, run in the parse worker."""
    limits = limits or Limits()
    return _wait(worker().submit("inspect", path, None, limits=limits), path, limits)


def convert_file(
    path: PathLike,
    out: PathLike,
    *,
    skip_invalid: bool = False,
    limits: Limits | None = None,
) -> Report:
    """`pipeline.convert_file`, run in the parse worker (the output is written there)."""
    limits = limits or Limits()
    return _wait(
        worker().submit("convert", path, out, skip_invalid=skip_invalid, limits=limits), path, limits
    )


async def convert_file_async(
    path: PathLike,
    out: PathLike,
    *,
    skip_invalid: bool = False,
    limits: Limits | None = None,
) -> Report:
    """`convert_file` without holding a thread while the worker reads."""
    limits = limits or Limits()
    fut = worker().submit("convert", path, out, skip_invalid=skip_invalid, limits=limits)
    return await wait_async(fut, path, limits)


async def subset_file_async(
    path: PathLike, out: PathLike, rows: list[tuple[int, int]], limits: Limits | None = None
) -> Report:
    """Rows `rows` (runs of the user's row numbers) of a prompt file as a new file, read in
    the parse worker (batchjob/input/subset.py)."""
    from batchjob import rowmap

    limits = limits or Limits()
    fut = worker().submit("subset", path, out, limits=limits, rows=rowmap.encode(rows))
    return await wait_async(fut, path, limits)


async def wait_async(fut: Future[Report], path: PathLike, limits: Limits) -> Report:
    """The report of a request sent with `worker().submit`."""
    try:
        import asyncio  # here: the CLI's reads are synchronous, and asyncio takes ~30 ms to import

        return await asyncio.wait_for(asyncio.wrap_future(fut), limits.max_parse_seconds + BACKSTOP_S)
    except TimeoutError:
        worker().kill()
        return _report(os.path.abspath(path), "limit_parse_time", limit=limits.max_parse_seconds)
