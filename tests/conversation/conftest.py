from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conversation.channel import DownloadError, pass_gate, read_data
from conversation.identity import qualify


class RecordingChannel:
    """A channel that records everything; downloads copy local files (ref = path)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, str, list | None]] = []  # chat (qualified), id, text, buttons
        self.edits: list[tuple[int, int, str]] = []
        self.documents: list[tuple[int, str, bytes]] = []
        self.albums: list[tuple[str, list[tuple[bytes, str]]]] = []
        self.next_id = 0
        self.fail_sends = 0

    async def send_text(self, chat_id, text, buttons=None):
        await pass_gate()  # as a real channel does, just before its request leaves
        if self.fail_sends:
            self.fail_sends -= 1
            raise RuntimeError("send failed")
        self.next_id += 1
        self.messages.append((chat_id, self.next_id, text, buttons))
        return self.next_id

    async def edit_text(self, chat_id, message_id, text, buttons=None):
        self.edits.append((chat_id, message_id, text))

    async def send_document(self, chat_id, filename, data, caption=None):
        self.documents.append((chat_id, filename, read_data(data)))

    async def send_images(self, chat_id, images):
        self.albums.append((chat_id, [(path.read_bytes(), caption) for path, caption in images]))

    async def download(self, ref, dest: Path, max_bytes):
        src = Path(ref)
        if not src.is_file():
            raise DownloadError("download_failed")
        if src.stat().st_size > max_bytes:
            raise DownloadError("too_large")
        shutil.copyfile(src, dest)
        return dest

    def texts(self, chat_id=None):
        return [m[2] for m in self.messages if chat_id is None or m[0] == qualify(chat_id)]

    def last_buttons(self, chat_id=None):
        for m in reversed(self.messages):
            if m[3] and (chat_id is None or m[0] == qualify(chat_id)):
                return [b for row in m[3] for b in row]
        return []


@pytest.fixture
def channel():
    return RecordingChannel()
