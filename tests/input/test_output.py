"""Atomic output: never a partial file; valid-only when asked."""

import orjson

from batchjob.input import convert_file
from batchjob.input.validate import passes_service_check


def test_invalid_file_writes_nothing_and_keeps_the_old_target(write, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("previous\n")
    r = convert_file(write("p.csv", "prompt,ratio\nfox,16:9\n,1:1\n"), out)
    assert (r.valid, r.invalid) == (1, 1)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "p.csv"]


def test_skip_invalid_keeps_only_valid_rows(write, tmp_path):
    out = tmp_path / "o.jsonl"
    r = convert_file(write("p.csv", "prompt,ratio\nfox,16:9\n,1:1\nowl,9:9\ncat,\n"), out, skip_invalid=True)
    assert (r.valid, r.invalid) == (2, 2)
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [g["contents"][0]["parts"][0]["text"] for g in got] == ["fox", "cat"]


def test_no_valid_rows_writes_nothing_even_with_skip_invalid(write, tmp_path):
    out = tmp_path / "o.jsonl"
    r = convert_file(write("p.csv", "prompt\n\n"), out, skip_invalid=True)
    assert r.fatal.code == "no_data_rows"
    assert not out.exists()


def test_exception_midway_removes_the_temp_file(write, tmp_path, monkeypatch):
    from batchjob.input import pipeline

    real = pipeline._AtomicLines.write

    def write_then_fail(self, line):
        real(self, line)
        self.f.writelines(self.batch)  # lines are on disk when the failure comes
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline._AtomicLines, "write", write_then_fail)
    out = tmp_path / "o.jsonl"
    r = convert_file(write("p.csv", "prompt\na\nb\nc\nd\n"), out)
    assert r.fatal is not None and r.fatal.code == "file_unreadable"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_every_line_passes_the_service_first_line_check(write, tmp_path):
    out = tmp_path / "o.jsonl"
    convert_file(
        write(
            "p.jsonl",
            '{"prompt": "a"}\n{"contents": [{"parts": [{"text": "b"}]}]}\n'
            '{"request": {"contents": [{"parts": [{"text": "c"}]}]}}\n',
        ),
        out,
    )
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert len(got) == 3 and all(passes_service_check(g) for g in got)
