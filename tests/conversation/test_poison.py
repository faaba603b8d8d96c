"""A file whose reading never finishes (the bot is killed meanwhile) is not read at every start.

Real processes, as in test_crash_points: the console bot is killed by SIGKILL while the
parse worker reads a hostile file, started again (and killed at the same point while
reading it again), then started a third time: the chat gets one clear message that the
file was dropped, and the bot goes on answering.
"""

from __future__ import annotations

import signal

from tests.conversation.test_crash_points import bot, bot_env, pytestmark, redis_server  # noqa: F401
from tests.files import corner_cell_xlsx


def test_a_file_cut_short_twice_is_dropped_with_a_message(redis_server, sandbox, tmp_path):  # noqa: F811
    poisoned = corner_cell_xlsx(tmp_path / "poisoned.xlsx")
    env = bot_env(redis_server, sandbox)
    crashing = {**env, "BJB_CRASH_AT": "inspect.reading"}
    first = bot(crashing, f"/file {poisoned}\n")
    assert first.returncode == -signal.SIGKILL, first.stdout[-2000:]
    second = bot(crashing, "")  # the restart reads it again, and is killed again
    assert second.returncode == -signal.SIGKILL, second.stdout[-2000:]
    third = bot(env, "/help\n")
    assert third.returncode == 0, third.stderr[-2000:]
    out = first.stdout + second.stdout + third.stdout
    assert out.count("was cut short twice") == 1, out[-3000:]
    assert "poisoned.xlsx" in third.stdout
    assert "/template" in third.stdout.split("was cut short twice", 1)[1]  # /help answered after it
    fourth = bot(env, "")
    assert fourth.returncode == 0 and "cut short" not in fourth.stdout  # nothing left to resume
