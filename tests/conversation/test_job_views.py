"""Job views through the runner: /status and /details without an id, /jobs with model, cost,
time and pages that work, /watch adopting a job sent from the CLI, /whoami."""

from __future__ import annotations

import re

from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived
from tests.conversation.test_flow import ADMIN, CHAT, app, drain  # noqa: F401  (the app fixture)

USER = 55


async def run_job(app, write, name="p.csv", body="prompt\na\nb\n"):  # noqa: F811
    src = write(name, body)
    await app.runner.handle(CHAT, FileReceived(str(src), name, 10, user_id=USER), client_lang="en")
    await app.runner.handle(CHAT, TextReceived("ok", USER))
    await drain(app)
    return (await app.store.load(CHAT)).recent[0]


async def test_status_and_details_without_id_mean_the_latest_job_with_buttons_for_others(
    app,  # noqa: F811
    channel,
    write,
):
    first = await run_job(app, write)
    latest = await run_job(app, write, "q.csv", "prompt\nx [fail]\n")
    await app.runner.handle(CHAT, CommandReceived("status", (), USER))
    assert channel.texts()[-1].startswith(f"{latest}: Failed")  # ended, still answered
    assert channel.last_buttons() == [(f"Job {first}", f"j:r:{first}")]
    await app.runner.handle(CHAT, ButtonPressed(f"j:r:{first}", USER))
    assert channel.texts()[-1].startswith(f"{first}: Completed")
    await app.runner.handle(CHAT, CommandReceived("details", (), USER))
    assert "Row 2 (x [fail])" in channel.texts()[-1]
    assert channel.last_buttons() == [(f"Job {first}", f"j:d:{first}")]


async def test_jobs_lines_and_pages(app, channel, write, sandbox):  # noqa: F811
    ids = [await run_job(app, write) for _ in range(11)]
    await app.runner.handle(CHAT, CommandReceived("jobs", (), USER))
    text = channel.texts()[-1]
    lines = text.splitlines()
    assert len(lines) == 11 and lines[-1] == "Page 1: 10 of 11 jobs."
    assert lines[0].startswith(
        f"{ids[-1]}: Completed, 2/2 done, 0 failed · google/gemini-2.5-flash-image fast"
    )
    assert "0.04 credits" in lines[0] and re.search(r"\d{1,2}:\d\d.*UTC$", lines[0]), lines[0]
    assert channel.last_buttons() == [("Next page", "l:2:")]
    await app.runner.handle(CHAT, ButtonPressed("l:2:", USER))
    assert channel.texts()[-1].splitlines()[0].startswith(ids[0])
    assert channel.texts()[-1].endswith("Page 2: 1 of 11 jobs.")
    await app.runner.handle(CHAT, CommandReceived("jobs", ("3",), USER))
    assert channel.texts()[-1] == "Page 3 is empty: 11 jobs in all."


async def test_watch_adopts_a_job_sent_from_the_cli(app, channel, write, sandbox):  # noqa: F811
    up = await app.client.upload(write("p.csv", "prompt\na\nb\nc\n"))
    job = await app.client.submit(up.file_id, "google/gemini-2.5-flash-image", "fast")
    await app.runner.handle(CHAT, CommandReceived("watch", (job.job_id,), USER), client_lang="en")
    assert channel.texts()[-1] == "Only admins can follow jobs that were not sent from this chat."
    await app.runner.handle(CHAT, CommandReceived("watch", ("job_unknown1",), ADMIN))
    assert channel.texts()[-1] == "The service knows no job job_unknown1."
    await app.runner.handle(CHAT, CommandReceived("watch", (job.job_id,), ADMIN))
    assert f"Job {job.job_id} is now followed in this chat" in channel.texts()[-1]
    await drain(app)
    assert sum(f"Job {job.job_id} finished: Completed" in t for t in channel.texts()) == 1
    await app.runner.handle(CHAT, CommandReceived("status", (job.job_id,), USER))  # known here now
    assert channel.texts()[-1].startswith(f"{job.job_id}: Completed, 3/3 done")


async def test_whoami_tells_the_ids(app, channel):  # noqa: F811
    await app.runner.handle(CHAT, CommandReceived("whoami", (), ADMIN), client_lang="en")
    assert channel.texts()[-1] == f"Your user id: tg:{ADMIN}\nThis chat's id: tg:{CHAT}\nAdmin: yes"
    await app.runner.handle(CHAT, CommandReceived("whoami", (), USER), client_lang="zh")
    assert channel.texts()[-1].endswith("管理员：否")
