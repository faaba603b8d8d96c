"""Differential fuzzing of the native row scanner: mutated files, native vs Python.

A seeded mutation loop (byte flips, inserts, deletions, quotes, line ends, BOMs, NULs)
over CSV seeds of every shape the scanner takes; each mutant is converted and inspected
natively and in Python, and the two must agree byte for byte. Bounded by count, not
time: `BJB_FUZZ_COUNT` (default 600) mutants per seed. `scripts/sanitize` runs this with
the scanner built under AddressSanitizer and UndefinedBehaviorSanitizer, where any
memory error or undefined behaviour aborts the run.
"""

from __future__ import annotations

import os
import random

import pytest

from batchjob.input import rowscan
from batchjob.input.limits import Limits
from tests.hostile import _mutate
from tests.input.test_rowscan import assert_same

pytestmark = pytest.mark.skipif(not rowscan.enabled(), reason="native row scanner not built here")

COUNT = int(os.environ.get("BJB_FUZZ_COUNT", "600"))
SEEDS = {
    "plain": "prompt,aspect_ratio,image_urls\nfox,16:9,https://cdn.example.com/a.png\n一只猫,1:1,\nowl,,\n",
    "quoted": 'prompt,image_urls\n"a, b ""c""","https://cdn.example.com/x.png, https://cdn.example.com/y.jpg"\n'
    '"multi\nline",\n',
    "crlf": "prompt;ratio\r\n(masterpiece:1.2) cat;9:16\r\n\u3000全角\u3000;16：9\r\n\r\n",
    "tsv": "提示词\t比例\t参考图\n水墨山水画\t4:3\thttps://img.example.org/p.webp\n\t\t\n",
    "empty-cells": 'prompt,aspect_ratio\n"",x\n,\n"",""\nok,1:1\n',
}


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutants_read_the_same_natively_and_in_python(name, tmp_path):
    rng = random.Random(f"{name}-20261202")
    seed = SEEDS[name].encode("utf-8")
    limits = Limits(max_cell_chars=64, max_rows=50)  # small bounds: mutants reach them too
    path = tmp_path / f"{name}.csv"
    for i in range(COUNT):
        data = _mutate(seed, rng, rng.randrange(1, 8))
        path.write_bytes(data)
        chunk = rng.choice([1, 3, 7, 64, 1 << 20])
        try:
            assert_same(path, chunk, rng.choice([1, 2, 8192]), limits)
        except AssertionError:
            keep = tmp_path / f"{name}-{i}.csv"
            keep.write_bytes(data)
            raise AssertionError(f"mutant {i} of {name} differs: {data!r}") from None
