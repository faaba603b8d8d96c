from __future__ import annotations

import pytest


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes, encoding="utf-8") -> Path"""

    def _write(name: str, data: str | bytes, encoding: str = "utf-8"):
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
        return path

    return _write
