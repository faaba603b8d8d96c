"""The console channel: the same conversation in a terminal, or driven through a pipe.

Type text as a chat message; `/file PATH [caption]` attaches a file; buttons are shown as
numbered choices and answered with the number; other `/commands` are chat commands.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
from pathlib import Path

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
