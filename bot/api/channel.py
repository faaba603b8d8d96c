"""The Channel of submissions: nobody reads messages here. What the runner and the watcher
would send to a chat becomes the submission's last message; a progress edit becomes a
progress callback (at most one per submission every `progress_every_s`); a download is the
upload the API saved."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from conversation.channel import Buttons, DownloadError, MessageId
from conversation.identity import native

if TYPE_CHECKING:
    from bot.api.service import Agents


class ApiChannel:
    def __init__(self, uploads: Path) -> None:
        self.uploads = uploads
        self.agents: Agents | None = None  # set once the service exists (it needs the app)
        self._ids = itertools.count(int(time.time() * 1000))

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> MessageId:
        if self.agents is not None:
            await self.agents.said(native(chat_id), text)
        return next(self._ids)

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None:
        if self.agents is not None:
            await self.agents.progressed(native(chat_id))

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        return None  # row errors and results are read through the API

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        return None

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        """`ref` is `api:<name>` of a file the API saved under its uploads folder."""
        name = native(ref)
        src = (self.uploads / name).resolve()
        if src.parent != self.uploads.resolve() or not src.is_file():
            raise DownloadError("download_failed")
        if src.stat().st_size > max_bytes:
            raise DownloadError("too_large")
        shutil.copyfile(src, dest)
        return dest
