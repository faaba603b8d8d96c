"""The record index -> the user's row map: round trip, gaps, malformed text."""

from hypothesis import given
from hypothesis import strategies as st

from batchjob import rowmap


def test_records_map_to_rows_across_gaps():
    runs = rowmap.decode(rowmap.encode([[2, 1], [6, 2], [9, 1]]))
    assert [rowmap.row_of(runs, i) for i in range(5)] == [2, 6, 7, 9, None]
    assert rowmap.row_of(runs, -1) is None


def test_malformed_or_missing_text_gives_no_map():
    for text in ("", None, "2+x", "a", "2+1,,3+1", b"\xff"):
        assert rowmap.row_of(rowmap.decode(text), 0) is None


async def test_200_000_rows_scattered_cost_redis_a_few_hundred_kilobytes_at_most(redis):
    """Every other row invalid (100,000 runs), and a random 30% invalid: the job's map, as
    the job record keeps it, measured in Redis."""
    import random

    alternate = [[2 + i * 2, 1] for i in range(100_000)]
    rng = random.Random(7)
    scattered, row, left = [], 2, 200_000
    while left:
        row += rng.choice((0, 0, 1))  # skips an invalid row about a third of the time
        n = min(left, rng.randint(1, 4))
        scattered.append([row, n])
        row, left = row + n, left - n
    from conversation.store import Store

    store, sizes = Store(redis), {}
    for name, runs in (("alternate", alternate), ("scattered", scattered)):
        job_id = f"job_rowmap_{name}"
        await store.add_job(job_id, "tg:1", rows=rowmap.encode(runs))
        kept = (await store.job(job_id))["rows"]
        assert rowmap.decode(kept) == [tuple(r) for r in runs]  # every record's row, exactly
        sizes[name] = await redis.hstrlen(store.k.job(job_id), "rows")
    print(f"row map of 200,000 rows in Redis: {sizes} bytes")
    assert sizes["alternate"] < 4_000 and sizes["scattered"] < 300_000, sizes


def test_a_map_too_scattered_even_compressed_is_dropped():
    import random

    rng = random.Random(3)
    runs, row = [], 1
    for _ in range(300_000):
        row += rng.randint(1, 10**6)
        runs.append([row, rng.randint(1, 10**6)])
    assert rowmap.encode(runs) == ""  # line numbers instead
    assert rowmap.decode("z:!!!") == [] and rowmap.decode("z:" + "A" * 8) == []


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 20)), max_size=2000))
def test_round_trip_matches_a_plain_list(gaps_and_lengths):
    runs, rows, row = [], [], 1
    for gap, n in gaps_and_lengths:
        row += gap
        runs.append([row, n])
        rows.extend(range(row, row + n))
        row += n
    decoded = rowmap.decode(rowmap.encode(runs))
    assert [rowmap.row_of(decoded, i) for i in range(len(rows))] == rows
