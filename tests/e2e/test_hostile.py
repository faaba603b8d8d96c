"""Over 200 hostile files through the whole bot: fake Telegram → bot → sandbox.

Every file gets a clear localized message or a correct result; nothing crashes; nothing
invalid is uploaded (only files whose every row is valid go up, with exactly their rows).
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest

from batchjob.input.isolation import inspect_file
from tests.e2e.conftest import until
from tests.e2e.fake_telegram import FakeTelegram
from tests.hostile import generate


@pytest.mark.slow  # every hostile file through the whole bot: CI runs it (scripts/test, CI=true)
async def test_hostile_files_through_the_bot(bot, telegram, sandbox, tmp_path, caplog, record_property):
    caplog.set_level(logging.ERROR)
    files = generate(tmp_path / "hostile")
    assert len(files) >= 200
    expected_ok: dict[str, int] = {}
    for p in files:
        r = inspect_file(p)
        if r.ok:
            expected_ok[Path(p.name).stem + ".jsonl"] = r.valid
    uploads_before = set(sandbox.state.files)
    chats = {}
    for i, p in enumerate(files, start=10_000):
        chats[i] = p.name
        telegram.send_document(i, FakeTelegram.user(i, "zh" if i % 2 else "en"), p)
    await until(lambda: all(telegram.texts(c) for c in chats), timeout=180, what="a reply to every file")
    # Valid files go on to the estimate; wait for those uploads to land.
    await until(
        lambda: len(set(sandbox.state.files) - uploads_before) >= len(expected_ok),
        timeout=60,
        what="uploads of the valid files",
    )
    uploaded = {f.filename: f.row_count for k, f in sandbox.state.files.items() if k not in uploads_before}
    assert uploaded == expected_ok  # nothing invalid uploaded, valid ones with exactly their rows
    for chat, name in chats.items():
        first = telegram.texts(chat)[0]
        assert (
            ("已检查文件" in first or "无法使用该文件" in first)
            if chat % 2
            else ("Checked your file" in first or "cannot be used" in first)
        ), (name, first)
    assert bot.metrics["errors"] == 0
    # The bot is still here (the files were read in the parse worker) and answers.
    telegram.send_text(9_999, FakeTelegram.user(9_999, "en"), "/help")
    await until(lambda: telegram.texts(9_999), timeout=60, what="an answer after the hostile files")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    record_property("peak_rss_mib", peak_mib)
    print(f"hostile files: {len(files)}, uploaded {len(uploaded)}, peak RSS {peak_mib} MiB")
