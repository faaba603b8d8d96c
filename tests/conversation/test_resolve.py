"""URL fetching and local paths refuse what they must, within their caps."""

from __future__ import annotations

import http.server
import threading

import pytest

from conversation.resolve import ResolveError, fetch_url, open_path


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/redirect-private"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
        elif self.path.startswith("/redirect-ok"):
            self.send_response(302)
            self.send_header("Location", "/file.csv")
            self.end_headers()
        elif self.path.startswith("/big"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        elif self.path.startswith("/file.csv"):
            body = b"prompt\nfox\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


async def test_fetch_and_follow_a_safe_redirect(server, tmp_path):
    path, name = await fetch_url(server + "/redirect-ok", tmp_path / "d", max_bytes=1000, allow_loopback=True)
    assert path.read_bytes() == b"prompt\nfox\n" and name == "file.csv"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://2130706433/x",
        "http://0x7f.1/x",
        "http://0177.0.0.1/x",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://user:pw@example.com/x",
    ],
)
async def test_refused_without_any_connection(url, tmp_path):
    with pytest.raises(ResolveError) as e:
        await fetch_url(url, tmp_path / "d", max_bytes=1000)
    assert e.value.reason in ("url_refused", "url_failed")
    assert not (tmp_path / "d").exists()


async def test_redirect_to_a_private_address_is_refused(server, tmp_path):
    with pytest.raises(ResolveError) as e:
        await fetch_url(server + "/redirect-private", tmp_path / "d", max_bytes=1000, allow_loopback=True)
    assert e.value.reason == "url_refused"


async def test_oversize_body_refused_and_removed(server, tmp_path):
    with pytest.raises(ResolveError) as e:
        await fetch_url(server + "/big", tmp_path / "d", max_bytes=1000, allow_loopback=True)
    assert e.value.reason == "url_too_large" and not (tmp_path / "d").exists()


def test_paths(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.csv").write_text("prompt\na\n")
    (tmp_path / "outside.csv").write_text("x")
    (root / "escape.csv").symlink_to(tmp_path / "outside.csv")
    dest = tmp_path / "copy"
    assert open_path(str(root / "ok.csv"), [root], dest, 1000)[0].read_text() == "prompt\na\n"
    for bad, reason in [
        (str(root / ".." / "outside.csv"), "path_refused"),
        (str(root / "escape.csv"), "path_refused"),
        ("/etc/passwd", "path_refused"),
        ("/proc/self/environ", "path_refused"),
        (str(root), "path_refused"),
        (str(root / "ok.csv") + "\x00", "path_refused"),
        (str(root / "nope.csv"), "path_refused"),
    ]:
        with pytest.raises(ResolveError) as e:
            open_path(bad, [root], tmp_path / "c2", 1000)
        assert e.value.reason == reason, bad
    with pytest.raises(ResolveError):
        open_path(str(root / "ok.csv"), [], tmp_path / "c3", 1000)  # no roots: paths disabled


def test_a_path_is_no_oracle_for_what_exists(tmp_path):
    """Outside the roots, an existing file and a missing one get the same answer, and so
    does a missing file inside them: nobody learns what exists on the bot's host."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "exists.csv").write_text("prompt\na\n")
    answers = set()
    for probe in (
        "/etc/hostname",
        "/etc/no-such-file",
        str(tmp_path / "exists.csv"),
        str(root / "missing.csv"),
    ):
        with pytest.raises(ResolveError) as e:
            open_path(probe, [root], tmp_path / "c", 1000)
        answers.add(e.value.reason)
    assert answers == {"path_refused"}
