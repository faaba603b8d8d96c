"""Progress and summary texts: every outcome counted, no time left once a job stops."""

from __future__ import annotations

from batchjob.models import Job
from conversation import texts


def job(**fields) -> Job:
    return Job.model_validate({"job_id": "job_1", **fields})


def test_a_cancelled_job_counts_the_records_that_never_ran():
    text = texts.summary("en", job(status="cancelled", total=60, completed=7, failed=0), 36)
    assert "7 succeeded, 0 failed of 60" in text and "53 records did not run." in text and "Cancelled" in text
    zh = texts.summary("zh", job(status="cancelled", total=60, completed=7, failed=0), 36)
    assert "53 条记录未运行。" in zh
    done = texts.summary("en", job(status="completed", total=2, completed=2, failed=0), 3)
    assert "Not run" not in done


def test_no_time_left_once_a_job_stops():
    running = texts.progress("en", job(status="running", total=10, completed=5, failed=0), 30)
    assert "left" in running
    for word in ("cancelling", "CANCELED", "expired"):
        stopping = texts.progress("en", job(status=word, total=10, completed=5, failed=0), 30)
        assert "left" not in stopping, word
