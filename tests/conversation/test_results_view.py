"""Results in the chat, on request: album pages, XLSX and CSV of every row, the ZIP, failed rows."""

from __future__ import annotations

import csv
import io
import zipfile

from conversation.events import ButtonPressed, FileReceived, TextReceived
from tests.conversation.test_flow import ADMIN, CHAT, app, drain  # noqa: F401  (app: the fixture)


async def _finished(app, channel, write, sandbox, body: str):  # noqa: F811
    sandbox.state.config.fail_marker = "[fail]"
    src = write("p.csv", body)
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size), client_lang="en")
    await app.runner.handle(CHAT, TextReceived("ok", ADMIN))
    await drain(app)
    return (await app.store.load(CHAT)).recent[0]


def _buttons(channel):
    return dict(channel.last_buttons(CHAT))


async def test_results_album_files_and_zip_then_failed_rows(app, channel, write, sandbox):  # noqa: F811
    # Rows 2.. of the user's file; row 4 fails; a prompt that looks like a formula stays text.
    job_id = await _finished(
        app, channel, write, sandbox, "prompt,aspect_ratio\nfox,16:9\n=1+1 owl,1:1\nbad [fail],1:1\n"
    )
    summary = channel.messages[-1]
    assert "finished" in summary[2]
    assert list(_buttons(channel)) == ["Results", "Failed rows", "Run failed rows again"]
    await app.runner.handle(CHAT, ButtonPressed(f"j:o:{job_id}", ADMIN))
    ((chat, album),) = channel.albums
    assert chat == "tg:100" and [caption for _, caption in album] == ["Row 2: fox", "Row 3: =1+1 owl"]
    assert all(data.startswith(b"\x89PNG") for data, _ in album)
    names = [name for _, name, _ in channel.documents]
    assert names == [f"{job_id}-results.xlsx", f"{job_id}-results.csv", f"{job_id}-images.zip"]
    rows = list(csv.reader(io.StringIO(channel.documents[1][2].decode("utf-8-sig"))))
    assert rows[0] == ["row", "prompt", "status", "image", "error"]
    assert [r[0] for r in rows[1:]] == ["2", "3", "4"] and rows[2][1] == "'=1+1 owl"
    assert rows[1][3] == "row-2.png" and rows[3][2] == "failed" and rows[3][4]
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(channel.documents[0][2])).active
    assert sheet["B3"].value == "=1+1 owl" and sheet["B3"].data_type == "s"  # text, not a formula
    with zipfile.ZipFile(io.BytesIO(channel.documents[2][2])) as z:
        assert sorted(z.namelist()) == ["row-2.png", "row-3.png"]
    await app.runner.handle(CHAT, ButtonPressed(f"j:f:{job_id}", ADMIN))
    assert channel.texts(CHAT)[-1].startswith(f"1 row of job {job_id} failed:\nRow 4: ")
    assert not list((app.runner.media).glob("results-*")) and not list(app.runner.media.glob("failed-*"))


async def test_many_images_are_paged_and_a_big_zip_becomes_links(app, channel, write, sandbox):  # noqa: F811
    app.runner.results.settings = app.runner.settings.model_copy(update={"results_zip_max_bytes": 2000})
    job_id = await _finished(app, channel, write, sandbox, "prompt\n" + "".join(f"p{i}\n" for i in range(23)))
    await app.runner.handle(CHAT, ButtonPressed(f"j:o:{job_id}", ADMIN))
    assert len(channel.albums[-1][1]) == 10
    assert channel.texts(CHAT)[-2] == "Images 1–10 of 23."
    assert "over 0 MB" in channel.texts(CHAT)[-1] or "MB" in channel.texts(CHAT)[-1]
    assert [n for _, n, _ in channel.documents][-1].endswith("results.csv")  # no ZIP past the cap
    nxt = next(data for label, data in channel.last_buttons(CHAT) if label.startswith("Next"))
    await app.runner.handle(CHAT, ButtonPressed(nxt, ADMIN))
    assert (
        next(c for _, c in channel.albums[-1][1]) == "Row 12: p10"
        and channel.texts(CHAT)[-1] == "Images 11–20 of 23."
    )
    last = next(data for label, data in channel.last_buttons(CHAT) if label.startswith("Next"))
    assert last == f"o:2:{job_id}" and "Next 3" in [label for label, _ in channel.last_buttons(CHAT)]
    await app.runner.handle(CHAT, ButtonPressed(last, ADMIN))
    assert len(channel.albums[-1][1]) == 3 and channel.texts(CHAT)[-1] == "Images 21–23 of 23."
    await app.runner.handle(CHAT, ButtonPressed(f"j:f:{job_id}", ADMIN))
    assert channel.texts(CHAT)[-1] == f"No row of job {job_id} failed."


async def test_a_job_not_of_this_chat_or_not_finished_gets_no_results(app, channel, write, sandbox):  # noqa: F811
    await app.runner.handle(CHAT, ButtonPressed("j:o:job_someone_elses", ADMIN))
    assert channel.albums == [] and "know" in channel.texts(CHAT)[-1].lower()
    await app.runner.handle(CHAT, ButtonPressed("o:1:job_someone_elses", ADMIN))
    assert channel.albums == [] and channel.documents == []


async def test_images_given_as_links_are_downloaded_for_the_album_and_zip(app, channel, write, sandbox):  # noqa: F811
    sandbox.state.config.results_file = False  # the job names only its summary: image URLs
    job_id = await _finished(app, channel, write, sandbox, "prompt,aspect_ratio\nfox,16:9\nowl,9:16\n")
    await app.runner.handle(CHAT, ButtonPressed(f"j:o:{job_id}", ADMIN))
    ((_, album),) = channel.albums
    assert [c for _, c in album] == ["Row 2: fox", "Row 3: owl"] and all(
        d.startswith(b"\x89PNG") for d, _ in album
    )
    rows = list(csv.reader(io.StringIO(channel.documents[1][2].decode("utf-8-sig"))))
    assert rows[1][3].startswith(sandbox.url) and rows[1][3].endswith("/0.png")  # the link itself
    with zipfile.ZipFile(io.BytesIO(channel.documents[2][2])) as z:
        assert sorted(z.namelist()) == ["row-2.png", "row-3.png"]


async def test_no_results_kept_by_the_service_is_said(app, channel, write, sandbox, monkeypatch):  # noqa: F811
    job_id = await _finished(app, channel, write, sandbox, "prompt\nfox\n")
    from batchjob import results

    async def nothing(*args, **kwargs):
        return None

    monkeypatch.setattr(results, "download", nothing)
    await app.runner.handle(CHAT, ButtonPressed(f"j:o:{job_id}", ADMIN))
    assert (
        channel.texts(CHAT)[-1]
        == f"The service keeps no results for job {job_id} (no results file, no summary)."
    )
    assert channel.albums == [] and channel.documents == []


async def test_the_results_command_shows_the_newest_job(app, channel, write, sandbox):  # noqa: F811
    from conversation.events import CommandReceived

    await app.runner.handle(CHAT, CommandReceived("results", (), ADMIN))
    assert channel.texts(CHAT)[-1] == "Use /results job_id."
    job_id = await _finished(
        app,
        channel,
        write,
        sandbox,
        "prompt\n一只穿着宇航服的橘猫漂浮在空间站里电影感光线柔和细节丰富色彩温暖构图居中背景深邃\n",
    )
    await app.runner.handle(CHAT, CommandReceived("results", (), ADMIN))
    ((_, album),) = channel.albums
    assert album[0][1].startswith("Row 2: 一只穿着") and album[0][1].endswith("…") and len(album[0][1]) < 60
    assert channel.documents[0][1] == f"{job_id}-results.xlsx"


async def test_run_failed_rows_again_builds_them_and_waits_for_the_word(app, channel, write, sandbox):  # noqa: F811
    body = "note,prompt,aspect_ratio\n,fox,16:9\n,,\n,bad one [fail],1:1\n,owl,9:16\n,worse [fail],1:1\n"
    job_id = await _finished(app, channel, write, sandbox, body)
    rerun = dict(channel.last_buttons(CHAT))["Run failed rows again"]
    submits = sandbox.state.submits
    await app.runner.handle(CHAT, ButtonPressed(rerun, ADMIN))
    texts = channel.texts(CHAT)
    assert any("Checked your file" in t and "2 rows" in t for t in texts[-3:]), texts[-3:]
    assert "Estimate" in texts[-1] and sandbox.state.submits == submits  # nothing without the word
    state = await app.store.load(CHAT)
    assert state.phase == "awaiting_confirm" and state.pending.filename == "p-failed-rows.csv"
    f = sandbox.state.files[state.pending.file_id]
    assert f.prompts == ["bad one [fail]", "worse [fail]"]  # exactly the failed rows, in order
    await app.runner.handle(CHAT, TextReceived("ok", ADMIN))
    await drain(app)
    assert sandbox.state.submits == submits + 1
    assert job_id in state.recent


async def test_run_failed_rows_again_when_the_original_is_gone(app, channel, write, sandbox):  # noqa: F811
    job_id = await _finished(app, channel, write, sandbox, "prompt\nfox\nbad [fail]\n")
    (write("p.csv", "x")).unlink()  # the original file is no longer where it came from
    await app.runner.handle(CHAT, ButtonPressed(f"j:a:{job_id}", ADMIN))
    assert channel.texts(CHAT)[-1].startswith("The original file cannot be fetched again")
    assert (await app.store.load(CHAT)).phase == "idle"
