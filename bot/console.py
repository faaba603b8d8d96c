"""The console channel, and `batchjob-bot --console` on it: the same conversation in a
terminal, or driven through a pipe.

Type text as a chat message; `/file PATH [caption]` attaches a file; buttons are shown as
numbered choices and answered with the number; other `/commands` are chat commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import locales
from conversation.channel import Buttons, DownloadError, MessageId, is_link, pass_gate, read_data

CHAT_ID = "cli:1"
USER_ID = "cli:1"


class ConsoleChannel:
    def __init__(self, out_dir: Path, stream=None) -> None:
        self.stream = stream  # None: whatever sys.stdout is now (patched while a prompt is open)
        self.out_dir = out_dir
        self.ids = itertools.count(1)
        self.choices: list[str] = []
        self.sent: list[str] = []

    def _print(self, text: str) -> None:
        out = self.stream or sys.stdout
        out.write(text + "\n")
        out.flush()

    def _show_buttons(self, buttons: Buttons | None, remember: bool) -> None:
        if not buttons:
            return
        links = [f"{label}: {data}" for row in buttons for label, data in row if is_link(data)]
        flat = [b for row in buttons for b in row if not is_link(b[1])]
        if remember:
            self.choices = [data for _, data in flat]
        numbered = "  ".join(f"[{i}] {label}" for i, (label, _) in enumerate(flat, 1))
        numbered += "".join(f"\n  {link}" for link in links)
        self._print(
            ("  " if remember else "  (buttons of the progress message: ")
            + numbered
            + ("" if remember else ")")
        )

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> int:
        await pass_gate()
        mid = next(self.ids)
        self.sent.append(text)
        self._print(f"\nbot › {text}")
        self._show_buttons(buttons, remember=True)
        return mid

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None:
        self._print(f"\nbot (message {message_id}, updated) › {text}")

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / Path(filename).name
        path.write_bytes(read_data(data))
        self._print(f"\nbot › [file] {path}" + (f" — {caption}" if caption else ""))

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for src, caption in images:
            path = self.out_dir / src.name
            shutil.copyfile(src, path)
            lines.append(f"  [image] {path} — {caption}")
        self._print("\nbot › " + "\n".join(lines).lstrip())

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        src = Path(ref).expanduser()
        try:
            if not src.is_file():
                raise DownloadError("download_failed")
            if src.stat().st_size > max_bytes:
                raise DownloadError("too_large")
            await asyncio.to_thread(shutil.copyfile, src, dest)
            os.chmod(dest, 0o600)
        except OSError:
            raise DownloadError("download_failed") from None
        return dest


class TypedLines:
    """What the user types in a terminal, read with prompt_toolkit under `patch_stdout`: the
    bot's messages (progress edits arrive at any time) print above the input line instead of
    into the middle of what is being typed."""

    def __init__(self, prompt: str = "you › ", **session_args: object) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        self.session: PromptSession[str] = PromptSession(**session_args)  # type: ignore[arg-type]
        self.prompt = prompt
        self.patch = patch_stdout(raw=True)

    def __enter__(self) -> TypedLines:
        self.patch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.patch.__exit__(*exc)

    async def next(self) -> str | None:
        """The next line, or None at the end of input (Ctrl-D) or on Ctrl-C."""
        try:
            return await self.session.prompt_async(self.prompt)
        except (EOFError, KeyboardInterrupt):
            return None


async def run(args: argparse.Namespace) -> int:
    """`batchjob-bot --console`: the conversation in this terminal (or from a pipe)."""
    from batchjob.client import BatchJobClient
    from bot.main import connect_redis, load_settings
    from conversation.app import ConversationApp
    from conversation.settings import ConversationSettings

    lang = args.lang or locales.normalize_language(os.environ.get("LANG"))
    sandbox = None
    overrides: dict[str, object] = {}
    if args.sandbox:
        from batchjob.sandbox_server import SandboxServer
        from batchjob.sandbox_state import SandboxConfig

        sandbox = SandboxServer(
            SandboxConfig(token="console-demo", records_per_second=2.0, queue_seconds=1.0)
        ).start()
        base_url, token = sandbox.url, "console-demo"
        overrides = {"poll_min_seconds": 1.0, "poll_max_seconds": 3.0}
    else:
        from batchjob.settings import load_service_settings

        svc = load_service_settings()
        base_url, token = svc.base_url, svc.bearer_token.get_secret_value()
        from bot.redact import redact_secrets

        redact_secrets(token)
    work = Path(tempfile.mkdtemp(prefix="batchjob-bot-"))
    settings = load_settings(ConversationSettings, "BOT_", media_dir=work / "media", **overrides)
    redis, persistent = await connect_redis(lang)
    channel = ConsoleChannel(work / "files")
    print(locales.t(lang, "console.intro"))
    if not persistent:
        print(locales.t(lang, "console.memory_store"))
    if sandbox is not None:
        print(locales.t(lang, "console.sandbox", url=sandbox.url))
    client = BatchJobClient(base_url, token)
    # One console per store: a fixed replica id, so a restart resumes its own work at once.
    app = ConversationApp(redis, client, channel, settings, replica="console")
    app.start_watcher()
    # What a killed console left in flight is resumed before the next line is read: its
    # replica id is fixed, so work started now would look like that earlier work.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.recovered.wait(), args.wait)
    admin = USER_ID in settings.admin_ids or args.sandbox
    interactive = sys.stdin.isatty()
    typed = TypedLines() if interactive else None
    try:
        if typed is not None:
            typed.__enter__()
        while True:
            if typed is not None:
                line = await typed.next()
                if line is None:  # Ctrl-D or Ctrl-C
                    break
            else:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    break
            text = line.strip()
            if not text:
                continue
            if not interactive:
                print(f"\nyou › {text}")
            if text == "/wait":  # scripts: let submitted jobs finish before the next line
                await _wait_for_jobs(app, args.wait)
                continue
            event = _event(text, channel, settings, admin)
            if event is None:
                print(locales.t(lang, "console.file_usage"))
                continue
            await app.runner.handle(CHAT_ID, event, client_lang=lang)
        if not interactive:
            await _wait_for_jobs(app, args.wait)
    finally:
        if typed is not None:
            typed.__exit__(None, None, None)
        await app.stop()
        await client.aclose()
        await redis.aclose()
        if sandbox is not None:
            sandbox.stop()
        # Nothing left behind: a flow resumed later gets its file again from its source.
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _event(text: str, channel, settings, admin: bool):
    from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived

    if text.isdigit() and 1 <= int(text) <= len(channel.choices):
        return ButtonPressed(channel.choices[int(text) - 1], USER_ID)
    if text.startswith("/file"):
        try:
            parts = shlex.split(text)
        except ValueError:
            return None
        if len(parts) < 2:
            return None
        path = Path(parts[1]).expanduser()
        size = path.stat().st_size if path.is_file() else None
        caption = " ".join(parts[2:]) or None
        return FileReceived(
            str(path),
            path.name,
            size,
            caption,
            too_large=size is not None and size > settings.max_download_bytes,
            user_id=USER_ID,
        )
    if text.startswith("/"):
        name, *rest = text[1:].split()
        return CommandReceived(name.split("@", 1)[0], tuple(rest), USER_ID, admin)
    return TextReceived(text, USER_ID)


async def _wait_for_jobs(app, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Work a crashed earlier run left in flight is resumed first (it may add jobs).
    await asyncio.wait_for(app.recovered.wait(), timeout)
    while await app.store.scheduled() > 0 and loop.time() < deadline:
        await asyncio.sleep(0.2)
