"""The running bot keeps out optional packages it never uses (`bot/unused.py`): its idle
memory is mostly the code it imported. Each check runs in a fresh interpreter, since this
test process has long imported everything."""

from __future__ import annotations

import os
import subprocess
import sys


def python(code: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_the_libraries_run_without_the_packages_kept_out():
    out = python(
        "import sys\n"
        "from bot.unused import keep_out\n"
        "keep_out()\n"
        "import httpx, telegram, telegram.ext, redis.asyncio\n"
        "from telegram._bot import CRYPTO_INSTALLED\n"
        "native = [m for m in sys.modules if m.startswith('cryptography.')]\n"
        "print(CRYPTO_INSTALLED, native, 'click' in sys.modules)\n"
        # uvicorn (the API's server) needs click: hidden only while httpx was imported
        "import uvicorn, click\n"
        "print('uvicorn ok')\n"
    )
    assert out.splitlines() == ["False [] False", "uvicorn ok"]


def test_keep_out_after_httpx_changes_nothing_for_click():
    out = python(
        "import httpx\nfrom bot.unused import keep_out\nkeep_out()\nimport click\nprint(click.__name__)\n"
    )
    assert out == "click"


def test_the_bot_keeps_them_out_before_it_reads_its_settings():
    ours = ("BOT_", "TELEGRAM_", "BATCHJOB_", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    out = python(
        "import sys, bot.main as m\n"
        "rc = m.main([])\n"  # no token: a one-line configuration error, exit 3
        "print(rc, sys.modules.get('cryptography', 'absent'))\n",
        env=env,
    )
    assert out.splitlines()[-1] == "3 None"


def test_the_bot_loads_no_reader_server_or_compiler_it_does_not_run():
    """An idle Telegram bot: the file readers run in the parsing worker, the server only in
    webhook mode, the catalogs are read compiled, Landlock only in a reading child."""
    # A first start compiles the catalogs (and keeps them compiled where it may write).
    python("import locales\nfor lang in locales.LANGUAGES: locales.t(lang, 'start.unexpected')\n")
    out = python(
        "import sys\n"
        "from bot.unused import keep_out\n"
        "keep_out()\n"
        "import bot.telegram.app, conversation.app, locales\n"
        "locales.t('zh', 'start.unexpected', detail='x')\n"
        "left = ['batchjob.input.pipeline', 'batchjob.input.validate', 'starlette', 'telegram.ext',\n"
        "        'ctypes', 'click']\n"
        "if all(locales.compiled_path(lang).exists() for lang in locales.LANGUAGES):\n"
        "    left.append('babel.messages')\n"
        "print(sorted(m for m in left if m in sys.modules))\n"
    )
    assert out == "[]"
