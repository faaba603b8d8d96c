"""The parse worker's guarantees, with a workload that misbehaves on purpose: every way a
reading child can end is a stable code, a killed worker is started again, no secret reaches
a child, and a child taken over by a crafted file cannot answer for another request."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from batchjob.input import Limits, isolation, pipeline
from batchjob.input.isolation import ParseWorker, worker_env
from batchjob.input.report import Report
from tests.files import xlsx

BEHAVIOURS = {
    "hang": "import time; time.sleep(600)",
    "abort": "os.abort()",
    "oom_abort": "os.write(2, b'memory allocation of 549755813888 bytes failed\\n'); os.abort()",
    "memory_error": "raise MemoryError",
    "panic": "raise BaseException('panicked')",
    "exit": "os._exit(3)",
    "spin": "while True: pass",
    # Its pipes closed, it never exits: the zygote must not wait on it (nor for ever).
    "linger": "os.closerange(0, 256); __import__('time').sleep(600)",
    # Writes down how it is scheduled, where the test can read it (its output's folder).
    "tell": (
        "open(out, 'w').write(repr((os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0),"
        " os.getpgid(0), os.getsid(0), os.getpid()))); raise MemoryError"
    ),
}


def _zygote(behaviour: str) -> subprocess.Popen[bytes]:
    """A real worker whose pipeline misbehaves: first writes its temp output, then `behaviour`."""
    code = (
        "import os\n"
        "from batchjob.input import pipeline, worker\n"
        "warm = pipeline.inspect_file\n"
        "def bad(path, out=None, **kw):\n"
        "    if 'examples' in str(path): return warm(path)  # the worker's own warm-up\n"
        "    if isinstance(out, str):\n"
        "        d, name = os.path.split(out); open(os.path.join(d, '.' + name + '.x.tmp'), 'w')\n"
        f"    {BEHAVIOURS[behaviour]}\n"
        "pipeline.inspect_file = pipeline.convert_file = bad\n"
        "worker.main()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env()
    )


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        ("hang", "limit_parse_time"),
        ("spin", "limit_parse_time"),
        ("linger", "limit_parse_time"),
        ("abort", "file_unreadable"),
        ("oom_abort", "limit_memory"),
        ("memory_error", "limit_memory"),
        ("panic", "file_unreadable"),
        ("exit", "file_unreadable"),
    ],
)
def test_every_way_a_child_can_end_is_a_stable_code(behaviour, code, tmp_path):
    z = _zygote(behaviour)
    out = tmp_path / "out.jsonl"
    limits = {**Limits().__dict__, "max_parse_seconds": 0.5}
    requests = [
        {"id": 1, "op": "convert", "path": str(tmp_path / "f.csv"), "out": str(out), "limits": limits},
        {"id": 2, "op": "inspect", "path": str(tmp_path / "g.csv"), "out": None, "limits": limits},
    ]
    stdout, _ = z.communicate(b"".join(orjson.dumps(r) + b"\n" for r in requests), timeout=60)
    answers = {
        a["id"]: Report.from_wire(a["report"]).fatal.to_dict() for a in map(orjson.loads, stdout.splitlines())
    }
    assert answers[1]["code"] == answers[2]["code"] == code, answers
    assert z.returncode == 0  # the worker itself went on, then ended when its input closed
    if code == "limit_parse_time":
        assert answers[1]["params"]["limit"] == 0.5
    assert list(tmp_path.glob(".*tmp")) == []  # a killed convert leaves no temp output


def test_a_killed_worker_fails_its_requests_and_is_started_again(tmp_path):
    os.environ.setdefault("BATCHJOB_NATIVE", "1")
    w = ParseWorker()
    try:
        slow = tmp_path / "slow.csv"
        slow.write_text("prompt\n" + "a fox\n" * 10)
        first = w.submit("inspect", slow, None, limits=Limits())
        first.result(timeout=60)
        pid = w.pid
        os.kill(pid, signal.SIGKILL)
        r = w.submit("inspect", slow, None, limits=Limits()).result(timeout=60)
        # Either the request reached the dying worker (answered as unavailable) or a new one.
        assert r.valid == 10 or r.fatal.code == "worker_unavailable"
        again = w.submit("inspect", slow, None, limits=Limits()).result(timeout=60)
        assert again.valid == 10 and w.pid != pid
    finally:
        w.close()


def test_the_worker_sees_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:worker-must-not-see")
    monkeypatch.setenv("BATCHJOB_BEARER_TOKEN", "bearer-worker-must-not-see")
    monkeypatch.setenv("REDIS_URL", "redis://:password-worker-must-not-see@127.0.0.1:1/0")
    w = ParseWorker()
    try:
        ok = xlsx(tmp_path / "ok.xlsx", {"S": [["prompt"], ["fox"]]})
        assert w.submit("inspect", ok, None, limits=Limits()).result(timeout=60).valid == 1
        environ = Path(f"/proc/{w.pid}/environ").read_bytes()
        assert b"must-not-see" not in environ
        assert b"PATH=" in environ
    finally:
        w.close()


def test_reading_yields_the_cpu_to_the_bot(tmp_path):
    """A reading child runs niced and as batch work, in a process group of its own (a
    signal for the bot's does not reach it) but in the zygote's session; the zygote, in a
    session of its own, lowers that session's weight where the kernel groups by session."""
    from batchjob.input.worker import READ_NICE

    z = _zygote("tell")
    out = tmp_path / "out.jsonl"
    request = {"id": 1, "op": "convert", "path": str(tmp_path / "f.csv"), "out": str(out), "limits": {}}
    z.communicate(orjson.dumps(request) + b"\n", timeout=60)
    nice, policy, pgid, sid, pid = ast.literal_eval(out.read_text())
    assert nice == READ_NICE and policy == os.SCHED_BATCH
    assert pgid == pid and sid == os.getsid(0) != pid  # this zygote was started in our session

    w = ParseWorker()
    try:
        small = tmp_path / "small.csv"
        small.write_text("prompt\na fox\n")
        assert w.submit("inspect", small, None, limits=Limits()).result(timeout=60).valid == 1  # up
        pid = w.pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == READ_NICE
        assert os.sched_getscheduler(pid) == os.SCHED_BATCH
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():  # a kernel that groups by session
            assert autogroup.read_text().split()[-1] == str(READ_NICE)
    finally:
        w.close()


def test_report_wire_form_round_trips(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("prompt,aspect_ratio,notes\nfox,16:9,x\n,1:1,y\n(owl:1.2),7:3,z\n")
    direct = pipeline.inspect_file(src)
    assert isolation.inspect_file(src).to_dict("zh") == direct.to_dict("zh")


def test_many_requests_with_large_reports_all_come_back(tmp_path):
    """More requests than the pipe holds, each answered with a report larger than the
    pipe: every one comes back (requests are written outside the lock answers need)."""
    src = tmp_path / "bad.csv"
    src.write_text("prompt,aspect_ratio\n" + "".join(f"fox {i},7:{i}\n" for i in range(600)))
    w = ParseWorker()
    try:
        futures = [w.submit("inspect", src, None, limits=Limits()) for _ in range(150)]
        reports = [f.result(timeout=240) for f in futures]
    finally:
        w.close()
    assert all(r.invalid == 600 and len(r.errors) == 600 for r in reports)


@pytest.mark.parametrize(("behaviour", "code"), [("abort", "file_unreadable"), ("hang", "limit_parse_time")])
def test_a_child_forked_from_the_cli_is_limited_and_sees_no_secret(behaviour, code, tmp_path):
    """`read_in_child`, as `batchjob inspect` uses it: the same limits and codes as the
    worker's children, and an environment without the caller's tokens."""
    script = (
        "import os, sys\n"
        "from batchjob.input import Limits, isolation, pipeline\n"
        "from batchjob.input.report import Issue, Report\n"
        "def spy(path, limits):\n"
        "    return Report(path=path, fatal=Issue('env', params={'keys': sorted(os.environ)}))\n"
        "def bad(path, limits):\n"
        f"    {BEHAVIOURS[behaviour]}\n"
        "pipeline.inspect_file = spy\n"
        "print(isolation.read_in_child('inspect', sys.argv[1]).fatal.params['keys'])\n"
        "pipeline.inspect_file = bad\n"
        "short = Limits(max_parse_seconds=0.3)\n"
        "print(isolation.read_in_child('inspect', sys.argv[1], limits=short).fatal.code)\n"
    )
    env = {**os.environ, "BATCHJOB_BEARER_TOKEN": "cli-bearer", "TELEGRAM_BOT_TOKEN": "1:cli-bot"}
    p = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "f.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    keys, got = p.stdout.splitlines()
    assert "BATCHJOB_BEARER_TOKEN" not in keys and "TELEGRAM_BOT_TOKEN" not in keys and "PATH" in keys
    assert got == code


def forging_child(forged: bytes, then: str, tmp_path: Path) -> list[str]:
    """Run `then` in a fresh interpreter where every reading child, instead of reading,
    writes `forged` to each descriptor it holds (a child taken over by a crafted file)."""
    script = (
        "import os, sys\n"
        "from batchjob.input import isolation, pipeline, worker\n"
        "def forge(path, limits):\n"
        "    for fd in range(3, 256):\n"
        "        try:\n"
        f"            os.write(fd, {forged!r})\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n"
        "pipeline.inspect_file = forge\n" + then
    )
    p = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "f.csv")], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.mark.parametrize(
    ("forged", "code"),
    [(b'{"id": 7, "report": {"path": "x", "fatal": null}}', None), (b"[1, 2]", "file_unreadable")],
)
def test_a_childs_answer_is_taken_only_for_its_own_request(forged, code, tmp_path):
    """A child taken over by a crafted file writes what it likes to its answer pipe: it
    cannot answer another request, and an answer of another shape is "unreadable", not a
    crash of the process that forked it (every parse in flight would fail with it)."""
    then = (
        "req = {'id': 3, 'op': 'inspect', 'path': sys.argv[1], 'limits': {}}\n"
        "answer = worker.Zygote(1).run_one(req)\n"
        "print(answer['id'], (answer['report'].get('fatal') or [None])[0])\n"
    )
    assert forging_child(forged, then, tmp_path) == ["3", str(code)]


def test_a_report_of_another_shape_makes_the_file_unreadable(tmp_path):
    """An answer shaped like one, whose report is not a report: its request is answered
    "file_unreadable" at once (the worker's reader waited for the backstop before, which
    ends every parse in flight)."""
    forged = b'{"id": 0, "report": {"columns": [1], "errors": 5}}'
    then = "print(isolation.read_in_child('inspect', sys.argv[1]).fatal.code)\n"
    assert forging_child(forged, then, tmp_path) == ["file_unreadable"]


def test_a_caller_works_while_the_forked_child_reads(tmp_path):
    """`meanwhile` runs after the fork and before the answer: the child is reading then.
    If it fails, the child is killed rather than left reading unwatched."""
    src = tmp_path / "p.csv"
    src.write_text("prompt\na fox\n")
    seen: list[int] = []

    def meanwhile() -> None:
        seen.append(os.getpid())

    report = isolation.read_in_child("inspect", src, meanwhile=meanwhile)
    assert report.valid == 1 and seen == [os.getpid()]  # here, once, not in the child

    children: list[int] = []
    kills: list[tuple[int, int]] = []
    real_fork, real_kill = os.fork, os.kill

    def fork() -> int:
        pid = real_fork()
        if pid:
            children.append(pid)
        return pid

    def kill(pid: int, sig: int) -> None:
        kills.append((pid, sig))
        real_kill(pid, sig)

    def fails() -> None:
        raise RuntimeError("meanwhile failed")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "fork", fork)
        m.setattr(os, "kill", kill)
        with pytest.raises(RuntimeError):
            isolation.read_in_child("inspect", src, meanwhile=fails)
    assert len(children) == 1 and kills == [(children[0], signal.SIGKILL)]
    os.waitpid(children[0], 0)
