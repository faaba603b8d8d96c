"""The parse worker: untrusted files are read in throwaway child processes.

Run as `python -m batchjob.input.worker` by `batchjob.input.isolation`, with a scrubbed
environment (no secrets). This process, the zygote, imports the readers once and never
opens a user's file itself. For each request it forks a child, which limits itself
(address space, CPU seconds, no core file, few open files), runs the pipeline and writes
its report to a pipe. Whatever a native reader does to a child (abort, panic, segfault,
an endless loop, running out of memory) ends that child only; the zygote turns its death
into a file-level problem with a stable code. Forking the warm zygote costs a couple of
milliseconds, where starting Python and importing the readers costs ~80.

Protocol, one JSON object per line: requests on stdin
`{"id", "op": "inspect"|"convert"|"subset", "path", "out", "skip_invalid", "rows", "limits"}`, answers on
stdout `{"id", "report"}` (the report's wire form). The zygote ends when stdin closes and
its children are done.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchjob.input.limits import Limits
from batchjob.input.report import Issue, Report, collector_paused

# What a reading child may see of the environment: nothing secret, only what Python, the
# native scanner and a sanitizer build need.
ENV_KEPT = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "PYTHONPATH",
    "BATCHJOB_NATIVE",
    "BATCHJOB_WORKER_PROCESSES",
    "LD_PRELOAD",
    "ASAN_OPTIONS",
    "UBSAN_OPTIONS",
    "LSAN_OPTIONS",
    "BATCHJOB_WORKER_LANDLOCK",
)
READ_NICE = 10  # readers' niceness: about a tenth of the bot's weight when both want one core
KILL_GRACE_S = 1.0  # past the pipeline's own clock, before the child is killed
_STDERR_KEPT = 8192  # bytes of a child's stderr kept to tell why it died
_OOM_MARKS = (b"memory allocation of", b"MemoryError", b"out of memory", b"Cannot allocate memory")


@dataclass
class _Child:
    pid: int
    req: dict[str, Any]
    deadline: float
    result: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    timed_out: bool = False
    open_fds: int = 2


def kept_environment(environ: Any) -> dict[str, str]:
    return {k: environ[k] for k in ENV_KEPT if k in environ}


def yield_to_the_bot() -> None:
    """Reading is bulk work next to the bot's answers: at a lower priority (`READ_NICE`) and
    as batch work (a reader woken by a request does not preempt the bot at once: the
    scheduler lets the running task finish its slice). Where the kernel groups processes by
    session (autogroup), that session - the zygote's own, its readers' too - is lowered as a
    whole, else it would weigh as much as the bot's whatever the readers' own niceness.
    Raising niceness needs no privilege; a refusal leaves the default."""
    with contextlib.suppress(OSError):
        now = os.getpriority(os.PRIO_PROCESS, 0)
        if now < READ_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, READ_NICE)
    with contextlib.suppress(OSError, AttributeError):  # SCHED_BATCH: Linux only
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if os.getsid(0) == os.getpid():  # our own session (never a terminal's we were run from)
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
            f.write(str(READ_NICE))


def _limit_self(limits: Limits, inherited: int = 0) -> None:
    """OS limits on this child: the pipeline's own bounds, enforced where Python cannot.
    `inherited`: the highest descriptor number it came with (kept open, pointing at
    /dev/null): the reading gets 64 more, however many its parent had open."""
    cpu = int(limits.max_parse_seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.max_memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (inherited + 64, inherited + 64))


def _run_child(req: dict[str, Any], wfd: int, efd: int, scrub_env: bool) -> None:
    """In the forked child: never returns."""
    code = 0
    try:
        if scrub_env:  # forked from the CLI (run_one): scrubbed here
            kept = kept_environment(os.environ)
            os.environ.clear()
            os.environ.update(kept)
        # Nothing but the answer pipe and stderr: a child taken over by a crafted file
        # cannot read other requests or forge the answers of other children.
        os.dup2(efd, 2)
        inherited = _blank_descriptors(keep=wfd)
        # A group of its own: a signal meant for the bot's process group does not reach a
        # parse. Not a session: it stays in the zygote's, whose lower weight it shares.
        os.setpgid(0, 0)
        yield_to_the_bot()
        limits = Limits(**req["limits"])
        _limit_self(limits, inherited)
        out = req.get("out")
        from batchjob.input import landlock  # ctypes: loaded where it is used, not in the bot

        with contextlib.suppress(OSError):  # a kernel that refuses a rule: the other limits stay
            landlock.confine([req["path"]], os.path.dirname(out) if out else None)
        from batchjob.input import pipeline

        if req["op"] == "convert":
            report = pipeline.convert_file(
                req["path"], req["out"], skip_invalid=bool(req.get("skip_invalid")), limits=limits
            )
        elif req["op"] == "subset":
            from batchjob import rowmap
            from batchjob.input.subset import subset_file

            wanted = {first + i for first, n in rowmap.decode(req.get("rows") or "") for i in range(n)}
            report = subset_file(req["path"], req["out"], wanted, limits)
        else:
            report = pipeline.inspect_file(req["path"], limits)
        payload = orjson.dumps({"id": req["id"], "report": report.to_wire()})
    except MemoryError:
        payload = orjson.dumps({"id": req["id"], "report": _fatal(req, "limit_memory", req["limits"])})
    except BaseException as e:  # whatever it was, the answer is "unreadable"
        payload = orjson.dumps(
            {"id": req["id"], "report": _fatal(req, "file_unreadable", {}, detail=type(e).__name__[:60])}
        )
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(wfd, view) :]
    except OSError:
        code = 1
    os._exit(code)


def _blank_descriptors(keep: int) -> int:
    """Every inherited descriptor but `keep` (and stderr) now points at /dev/null; returns
    the highest descriptor number in use.

    Not closed: a Python object of the parent that owned one may still close it when it
    is collected, and a closed number would by then belong to a file this child opened."""
    null = os.open(os.devnull, os.O_RDWR)
    listing = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    highest = max(null, keep, 2)
    for name in os.listdir(listing):
        fd = int(name)
        highest = max(highest, fd)
        if fd not in (2, keep, null):
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
                os.dup2(null, fd)
    return highest


def _fatal(req: dict[str, Any], code: str, limits: dict[str, Any], **params: Any) -> dict[str, Any]:
    if code == "limit_memory":
        params["limit"] = int(limits.get("max_memory_bytes") or 0) // (1 << 20)
    elif code == "limit_parse_time":
        params["limit"] = limits.get("max_parse_seconds")
    return Report(path=str(req.get("path", "")), fatal=Issue(code, params=params)).to_wire()


def _death(child: _Child, status: int) -> dict[str, Any]:
    """The report for a child that ended without one."""
    req, limits = child.req, child.req.get("limits", {})
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if child.timed_out or sig == signal.SIGXCPU:
        return _fatal(req, "limit_parse_time", limits)
    if any(m in child.stderr for m in _OOM_MARKS):
        return _fatal(req, "limit_memory", limits)
    detail = f"signal {signal.Signals(sig).name}" if sig else f"exit {os.WEXITSTATUS(status)}"
    return _fatal(req, "file_unreadable", limits, detail=detail)


def _leftovers(out: str | None) -> None:
    """A killed convert leaves its temp file beside the target: remove it."""
    if not out:
        return
    target = Path(out)
    with contextlib.suppress(OSError):
        for p in target.parent.glob(f".{target.name}.*.tmp"):
            p.unlink(missing_ok=True)


class Zygote:
    """Forks a child per request and watches it: as the worker process (`serve`), or once
    from a process that holds no secrets and no threads, such as the CLI (`run_one`)."""

    def __init__(self, max_children: int) -> None:
        self.max_children = max(1, max_children)
        self.sel = selectors.DefaultSelector()
        self.queue: deque[dict[str, Any]] = deque()
        self.children: dict[int, _Child] = {}  # by pid
        self.inbuf = b""
        self.eof = False
        self.answers: list[dict[str, Any]] | None = None  # run_one keeps answers here
        # Whether a child must scrub its environment (forked from the CLI); the worker was
        # started with a scrubbed one. Looked at once: the environment is not changed after.
        self.scrub_env = any(k not in ENV_KEPT for k in os.environ)

    def serve(self) -> None:
        stdin = sys.stdin.buffer.fileno()
        os.set_blocking(stdin, False)
        self.sel.register(stdin, selectors.EVENT_READ, None)
        while not (self.eof and not self.children and not self.queue):
            while self.queue and len(self.children) < self.max_children:
                self._start(self.queue.popleft())
            self._tick()

    def run_one(self, req: dict[str, Any], meanwhile: Callable[[], object] | None = None) -> dict[str, Any]:
        """Read one file in a forked child of this process; its answer. `meanwhile` runs
        here while the child reads (after the fork: no thread is started before it)."""
        self.answers = []
        self._start(req)
        try:
            if meanwhile is not None:
                meanwhile()
            while self.children:
                self._tick()
        except BaseException:  # interrupted: the child must not read on unwatched
            for c in self.children.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)
            raise
        return self.answers[0]

    def _tick(self) -> None:
        """Wait for the next thing to happen (a request, a child's output), kill the overdue."""
        timeout = None
        if self.children:
            timeout = max(0.0, min(c.deadline for c in self.children.values()) - time.monotonic())
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._read_requests(key.fd)
            elif key.data[1] == "exit":
                self._exited(key.fd, key.data[0])
            else:
                self._read_child(key.fd, *key.data)
        now = time.monotonic()
        for c in self.children.values():
            if not c.timed_out and now >= c.deadline:
                c.timed_out = True
                c.deadline = now + 3600  # killed: its pipes close, _read_child reaps it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)

    def _read_requests(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            self.eof = True
            self.sel.unregister(fd)
            return
        self.inbuf += chunk
        *lines, self.inbuf = self.inbuf.split(b"\n")
        for line in lines:
            if line.strip():
                self.queue.append(orjson.loads(line))

    def _start(self, req: dict[str, Any]) -> None:
        rr, rw = os.pipe()
        er, ew = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os.close(rr)
            os.close(er)
            _run_child(req, rw, ew, self.scrub_env)
        os.close(rw)
        os.close(ew)
        seconds = float(req.get("limits", {}).get("max_parse_seconds", 60.0))
        child = _Child(pid, req, time.monotonic() + seconds + KILL_GRACE_S)
        self.children[pid] = child
        for fd, kind in ((rr, "result"), (er, "stderr")):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, (pid, kind))

    def _read_child(self, fd: int, pid: int, kind: str) -> None:
        child = self.children[pid]
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if chunk:
            if kind == "result":
                child.result += chunk
            elif len(child.stderr) < _STDERR_KEPT:
                child.stderr += chunk[: _STDERR_KEPT - len(child.stderr)]
            return
        self.sel.unregister(fd)
        os.close(fd)
        child.open_fds -= 1
        if child.open_fds == 0:
            self._reap(child)

    def _reap(self, child: _Child) -> None:
        """Its pipes are closed; its answer waits for its exit status. A child still tearing
        down its memory is watched through a pidfd rather than waited for, so the zygote
        meanwhile reads the other children and the requests (waiting took ~5 ms a file). It
        keeps its place among `max_children` until it exits: children that linger cannot
        pile up past the bound."""
        pid, status = os.waitpid(child.pid, os.WNOHANG)
        if pid:
            self._finish(child, status)
            return
        try:
            pidfd = os.pidfd_open(child.pid)
        except (AttributeError, OSError):  # no pidfd here (not Linux 5.3+): wait
            self._finish(child, os.waitpid(child.pid, 0)[1])
            return
        self.sel.register(pidfd, selectors.EVENT_READ, (child.pid, "exit"))

    def _exited(self, pidfd: int, pid: int) -> None:
        self.sel.unregister(pidfd)
        os.close(pidfd)
        self._finish(self.children[pid], os.waitpid(pid, 0)[1])

    def _finish(self, child: _Child, status: int) -> None:
        del self.children[child.pid]
        answer = None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and child.result:
            with contextlib.suppress(orjson.JSONDecodeError), collector_paused():
                answer = orjson.loads(child.result)
        # A child taken over by a crafted file writes what it likes: an answer of another
        # shape is no answer, and it answers its own request whatever id it names.
        if not (isinstance(answer, dict) and isinstance(answer.get("report"), dict)):
            answer = {"report": _death(child, status)}
        answer["id"] = child.req["id"]
        if child.req.get("op") == "convert" and answer["report"].get("fatal"):
            _leftovers(child.req.get("out"))  # nothing is written for a refused file
        self._answer(answer)

    def _answer(self, answer: dict[str, Any]) -> None:
        if self.answers is not None:
            self.answers.append(answer)
            return
        data = memoryview(orjson.dumps(answer) + b"\n")
        out = sys.stdout.buffer.fileno()
        while data:
            data = data[os.write(out, data) :]


def main() -> None:
    # Imported here, once: every child starts with the readers loaded.
    import olefile  # noqa: F401
    import python_calamine  # noqa: F401

    from batchjob.input import landlock, pipeline

    landlock.prepare()

    # One read of the bundled example warms the lazy parts (codecs, regexes, caches) once
    # here rather than in every child; freezing the heap keeps the children's collector
    # off the pages they share with us (a child reading a small file: ~10 ms -> ~5 ms).
    with contextlib.suppress(Exception):
        pipeline.inspect_file(Path(__file__).resolve().parents[1] / "examples" / "prompts.csv")
    gc.freeze()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the zygote ends
    yield_to_the_bot()
    max_children = int(os.environ.get("BATCHJOB_WORKER_PROCESSES") or os.cpu_count() or 2)
    Zygote(max_children).serve()


if __name__ == "__main__":
    main()
