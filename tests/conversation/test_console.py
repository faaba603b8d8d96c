"""The console demo driven through a pipe, as the README runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from batchjob.cli import example_path


def run(script: str, *args: str, timeout: int = 90, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BATCHJOB_BEARER_TOKEN")}
    env["LANG"] = "C.UTF-8"
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "bot.main", "--console", "--sandbox", *args],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_demo_file_to_summary_then_results():
    p = run(f"/file {example_path()}\ngoogle/gemini-2.5-flash-image fast\n/wait\n/results\n")
    out = p.stdout
    assert p.returncode == 0, p.stderr
    order = [
        "Checked your file",
        "Estimate:",
        "Model: google/gemini-2.5-flash-image",
        "submitted (google/gemini-2.5-flash-image, fast)",
        "finished: Completed",
        "[image]",  # /wait let the job finish, then /results brought its images and files
        "results.xlsx",
        "images.zip",
    ]
    positions = [out.index(s) for s in order]
    assert positions == sorted(positions)
    assert out.count("finished: Completed") == 1
    assert "in-process store" in out and "Traceback" not in p.stderr


def test_numbered_buttons_and_chinese():
    p = run(f"/file {example_path()}\n1\n", "--lang", "zh")
    assert p.returncode == 0, p.stderr
    assert "预估费用" in p.stdout and "已结束：已完成" in p.stdout


def test_help_and_bad_input():
    p = subprocess.run([sys.executable, "-m", "bot.main", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--console" in p.stdout and "/file PATH" in p.stdout
    p = run("/file\n/file /nonexistent/x.csv\nhello\n/nope\n")
    assert p.returncode == 0 and "Traceback" not in p.stderr
    assert "Use /file PATH" in p.stdout and "could not download" in p.stdout and "Unknown command" in p.stdout


def test_the_console_leaves_no_folder_behind(tmp_path):
    p = run(f"/file {example_path()}\ngoogle/gemini-2.5-flash-image fast\n", TMPDIR=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert not list(tmp_path.glob("batchjob-bot-*"))


async def test_typed_lines_keep_the_bots_messages_out_of_the_input_line(tmp_path):
    # While the prompt is open, what the channel prints goes through prompt_toolkit's
    # stdout proxy (drawn above the input line), and the typed line comes back whole.
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from prompt_toolkit.patch_stdout import StdoutProxy

    from bot.console import ConsoleChannel, TypedLines

    channel = ConsoleChannel(tmp_path)
    seen = []
    with create_pipe_input() as pipe, TypedLines(input=pipe, output=DummyOutput()) as typed:
        seen.append(isinstance(sys.stdout, StdoutProxy))
        await channel.edit_text(1, 1, "Job job_1: Running")  # a progress edit arrives
        pipe.send_text("google/gemini-2.5-flash-image fast\r")
        line = await typed.next()
        pipe.close()
        end = await typed.next()
    assert seen == [True] and line == "google/gemini-2.5-flash-image fast" and end is None
    assert not isinstance(sys.stdout, StdoutProxy)  # restored at exit
