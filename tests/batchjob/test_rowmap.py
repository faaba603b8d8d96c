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


def test_a_scattered_map_too_long_to_keep_is_dropped():
    assert rowmap.encode([[i * 2, 1] for i in range(10_000)]) == ""


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 20)), max_size=30))
def test_round_trip_matches_a_plain_list(gaps_and_lengths):
    runs, rows, row = [], [], 1
    for gap, n in gaps_and_lengths:
        row += gap
        runs.append([row, n])
        rows.extend(range(row, row + n))
        row += n
    decoded = rowmap.decode(rowmap.encode(runs))
    assert [rowmap.row_of(decoded, i) for i in range(len(rows))] == rows
