"""Hostile files are read in the parse worker: bounds first, then a child with OS limits.

Each file here took the whole process down before (an abort nothing in Python can catch,
a panic that `except Exception` misses, a fill loop quadratic in merges). Now each is a
file-level problem with a stable code, and the worker goes on answering.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import replace

import orjson
import pytest

from batchjob.input import Limits, isolation, landlock, pipeline
from batchjob.input.isolation import ParseWorker, worker_env
from batchjob.input.report import Report
from tests.files import corner_cell_xls, corner_cell_xlsx, mutated_xls, overlapping_merges_xlsx, xlsx


def _messages(report) -> dict[str, str]:
    return {lang: report.to_dict(lang)["fatal"]["message"] for lang in ("en", "zh")}


def test_a_cell_at_the_grid_corner_is_refused_before_any_grid(tmp_path):
    path = corner_cell_xlsx(tmp_path / "corner.xlsx")
    assert path.stat().st_size < 8000
    r = isolation.inspect_file(path)
    assert r.fatal.code == "limit_sheet_columns"
    assert r.fatal.params["cell"] == "XFD1048576" and r.fatal.params["columns"] == 16384
    for text in _messages(r).values():
        assert "Prompts" in text and "XFD1048576" in text


def test_a_far_cell_within_the_columns_is_refused_by_its_area(tmp_path):
    r = isolation.inspect_file(corner_cell_xlsx(tmp_path / "far.xlsx", "ALL20000"))
    assert r.fatal.code == "limit_sheet_cells"
    assert (r.fatal.params["rows"], r.fatal.params["columns"]) == (20000, 1000)


def test_xls_cell_at_the_grid_corner_is_refused(tmp_path):
    r = isolation.inspect_file(corner_cell_xls(tmp_path / "corner.xls"))
    assert r.fatal.code == "limit_sheet_cells"
    assert r.fatal.params["cell"] == "IV65536"


def test_overlapping_merges_are_refused_by_their_area(tmp_path):
    path = overlapping_merges_xlsx(tmp_path / "merges.xlsx", 10_000, "Z")
    r = pipeline.inspect_file(path)  # in process: refused before calamine fills anything
    assert r.fatal.code == "limit_merged_cells"
    assert r.fatal.params["cells"] > Limits().max_merged_cells
    assert "Sheet1" in _messages(r)["zh"]


def test_merges_within_bounds_are_still_filled(tmp_path):
    path = xlsx(
        tmp_path / "m.xlsx",
        {"S": [["prompt", "ratio"], ["fox", "16:9"], [None, None], ["owl", "1:1"]]},
        merges={"S": ["B2:B3"]},
    )
    r = isolation.inspect_file(path)
    # Row 3 has no prompt (its ratio is filled from the merge); the merge itself is fine.
    assert r.fatal is None and r.valid == 2


def test_the_limits_are_settings(tmp_path):
    path = corner_cell_xlsx(tmp_path / "wide.xlsx", "BZ3")
    assert isolation.inspect_file(path).fatal is None
    r = isolation.inspect_file(path, replace(Limits(), max_sheet_columns=50))
    assert r.fatal.code == "limit_sheet_columns" and r.fatal.params["limit"] == 50


def test_a_reader_panic_is_a_file_error_not_a_crash(tmp_path):
    path = mutated_xls(tmp_path / "panic.xls", seed=20)
    probe = (
        "import sys, python_calamine as pc\n"
        "try:\n wb = pc.CalamineWorkbook.from_path(sys.argv[1]); list(wb.get_sheet_by_index(0).iter_rows())\n"
        "except Exception: sys.exit(0)\n"
        "except BaseException: sys.exit(9)\n"
    )
    if subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True).returncode != 9:
        pytest.skip("this python-calamine does not panic on the mutated file")
    r = pipeline.inspect_file(path)  # in process: the panic is caught at the reader boundary
    assert r.fatal.code == "spreadsheet_unreadable" and r.fatal.params["detail"] == "PanicException"
    assert isolation.inspect_file(path).fatal.code == "spreadsheet_unreadable"


def test_an_abort_in_the_reader_ends_the_child_only(tmp_path):
    """With the bounds lifted, calamine asks for 512 GiB and aborts: the worker's child dies,
    the answer is `limit_memory`, and the same worker reads the next file."""
    w = ParseWorker()
    try:
        loose = replace(
            Limits(), max_sheet_columns=20_000, max_sheet_cells=10**13, max_memory_bytes=512 << 20
        )
        path = corner_cell_xlsx(tmp_path / "corner.xlsx")
        r = w.submit("inspect", path, None, limits=loose).result(timeout=120)
        assert r.fatal.code == "limit_memory" and r.fatal.params["limit"] == 512
        assert "512" in _messages(r)["en"]
        pid = w.pid
        ok = xlsx(tmp_path / "ok.xlsx", {"S": [["prompt"], ["fox"]]})
        assert w.submit("inspect", ok, None, limits=Limits()).result(timeout=60).valid == 1
        assert w.pid == pid
    finally:
        w.close()


def test_a_reading_child_holds_no_descriptor_but_its_answer_pipe(tmp_path):
    """A child taken over by a crafted file could otherwise read other requests from the
    worker's stdin or write forged answers to its stdout: every inherited descriptor but
    its answer pipe and stderr points at /dev/null."""
    code = (
        "import os\n"
        "from batchjob.input import pipeline, worker\n"
        "from batchjob.input.report import Issue, Report\n"
        "warm = pipeline.inspect_file\n"
        "def fds(path, limits=None):\n"
        "    if 'examples' in str(path): return warm(path)\n"
        "    import stat\n"
        "    null, where = os.fstat(0), {}\n"  # fd 0 is /dev/null in a reading child
        "    for fd in range(64):\n"
        "        try: st = os.fstat(fd)\n"
        "        except OSError: continue\n"
        "        same = (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)\n"
        "        pipe = stat.S_ISFIFO(st.st_mode)\n"
        "        where[str(fd)] = '/dev/null' if same else 'pipe:' if pipe else 'other'\n"
        "    return Report(path=path, fatal=Issue('fds', params=where))\n"
        "pipeline.inspect_file = fds\n"
        "worker.main()\n"
    )
    z = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env()
    )
    req = {
        "id": 1,
        "op": "inspect",
        "path": str(tmp_path / "f.csv"),
        "out": None,
        "limits": Limits().__dict__,
    }
    stdout, _ = z.communicate(orjson.dumps(req) + b"\n", timeout=60)
    where = Report.from_wire(orjson.loads(stdout)["report"]).fatal.params
    others = {fd: target for fd, target in where.items() if target != "/dev/null" and fd != "2"}
    assert list(others.values()) == ["pipe:"], where  # the answer pipe alone


def test_descriptors_of_the_parent_closed_late_do_not_hit_the_childs_files(tmp_path):
    """A file object of the forking process, collected in the child, closes its own
    descriptor: that number must not by then belong to the child's output (it did: a
    convert failed half-way with EBADF)."""
    src = tmp_path / "p.csv"
    src.write_text("prompt\n" + "a fox\n" * 20)
    script = (
        "import os, sys\n"
        "from batchjob.input import isolation, pipeline\n"
        "junk = [open(os.devnull) for _ in range(20)]\n"
        "real = pipeline.convert_file\n"
        "def convert(path, out, **kw):\n"
        "    f = open(out + '.probe', 'w')\n"
        "    junk.clear()  # the parent's objects go: each closes its descriptor\n"
        "    f.write('x'); f.close()\n"
        "    os.unlink(out + '.probe')\n"
        "    return real(path, out, **kw)\n"
        "pipeline.convert_file = convert\n"
        "r = isolation.read_in_child('convert', sys.argv[1], sys.argv[2])\n"
        "print(r.fatal.code if r.fatal else r.valid)\n"
    )
    out = tmp_path / "o.jsonl"
    p = subprocess.run(
        [sys.executable, "-c", script, str(src), str(out)], capture_output=True, text=True, timeout=60
    )
    assert p.stdout.strip() == "20", p.stdout + p.stderr
    assert out.exists()


@pytest.mark.skipif(landlock.abi() == 0, reason="this kernel has no Landlock")
def test_a_reading_child_reaches_only_its_own_files(tmp_path):
    """Confined with Landlock: the file it reads and its output folder, nothing else of the
    filesystem (Python's own installation aside), no network."""
    (tmp_path / "secret.txt").write_text("not yours")
    outdir = tmp_path / "out"
    outdir.mkdir()
    script = (
        "import os, socket, sys\n"
        "from batchjob.input import isolation, pipeline\n"
        "from batchjob.input.report import Issue, Report\n"
        "def probe(path, out, **kw):\n"
        "    seen = {}\n"
        "    for name, act in [\n"
        "        ('read_input', lambda: open(path).read()),\n"
        "        ('write_out', lambda: open(os.path.join(os.path.dirname(out), 'x'), 'w').write('1')),\n"
        "        ('read_other', lambda: open(sys.argv[3]).read()),\n"
        "        ('read_etc', lambda: open('/etc/hostname').read()),\n"
        "        ('write_tmp', lambda: open(os.path.join(os.path.dirname(path), 'y'), 'w').write('1')),\n"
        "        ('connect', lambda: socket.create_connection(('127.0.0.1', 9), timeout=1)),\n"
        "    ]:\n"
        "        try: act(); seen[name] = 'ok'\n"
        "        except PermissionError: seen[name] = 'denied'\n"
        "        except OSError as e: seen[name] = 'denied' if e.errno == 13 else type(e).__name__\n"
        "    return Report(path=path, fatal=Issue('probe', params=seen))\n"
        "pipeline.convert_file = probe\n"
        "print(isolation.read_in_child('convert', sys.argv[1], sys.argv[2]).fatal.params)\n"
    )
    src = tmp_path / "p.csv"
    src.write_text("prompt\nfox\n")
    args = [str(src), str(outdir / "o.jsonl"), str(tmp_path / "secret.txt")]
    p = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    seen = ast.literal_eval(p.stdout.strip())  # the dict the script printed
    assert seen == {
        "read_input": "ok",
        "write_out": "ok",
        "read_other": "denied",
        "read_etc": "denied",
        "write_tmp": "denied",
        "connect": "denied",
    }, p.stdout + p.stderr


async def test_rows_of_a_file_are_copied_out_in_the_worker_and_hostile_input_is_a_report(tmp_path):
    import csv

    from batchjob.input.isolation import subset_file_async

    def read(path):
        with path.open(encoding="utf-8") as f:
            return list(csv.reader(f))

    src = tmp_path / "p.csv"
    src.write_text("prompt\na\nb\n")
    out = tmp_path / "f.csv"
    report = await subset_file_async(src, out, [(3, 1)])
    assert report.fatal is None and read(out) == [["prompt", "original_row"], ["b", "3"]]
    junk = tmp_path / "x.xlsx"
    junk.write_bytes(b"PK\x03\x04 not a workbook")
    report = await subset_file_async(junk, tmp_path / "g.csv", [(2, 1)])
    assert report.fatal is not None and not (tmp_path / "g.csv").exists()


def test_python_folders_take_one_rule_each_and_a_link_leading_out_keeps_its_own(tmp_path, monkeypatch):
    """Each Landlock rule costs every reading child system calls: a folder inside another
    allowed one needs none of its own, but one reached through a symbolic link that leads
    out of it does (the kernel allows by the resolved tree)."""
    top, elsewhere = tmp_path / "top", tmp_path / "elsewhere"
    (top / "nested" / "deeper").mkdir(parents=True)
    elsewhere.mkdir()
    (top / "link").symlink_to(elsewhere)
    (tmp_path / "top-sibling").mkdir()  # a name that starts like `top` is not inside it
    inside = [str(top / "nested"), str(top / "nested" / "deeper"), str(top / "link")]
    monkeypatch.setattr(sys, "path", [str(tmp_path / "top-sibling"), str(top), *inside])
    paths = [p for p, _ in landlock._python_paths.__wrapped__()]
    assert str(top.resolve()) in paths and str(elsewhere.resolve()) in paths
    assert str((tmp_path / "top-sibling").resolve()) in paths
    assert not any(p.startswith(str(top.resolve()) + "/") for p in paths)
    for p in paths:  # none of them beneath another
        assert not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)
