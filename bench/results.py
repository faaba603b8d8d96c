"""Results benchmark: a finished job of N records with ~1 MB images, from the Results button
to the album and to the ZIP, and the peak memory of doing it.

In the same run, each in a process of its own (peak RSS is the process's own):
- ours: `ResultsView.show` — the results file downloaded to disk and read record by record,
  images decoded to files as they go by, the ZIP written from those files;
- naive: the whole results file read into memory, every record parsed into one list, every
  image decoded in memory, the ZIP built in memory.
`ours` runs at N/4 records too: its peak must stay flat in the number of records.

The service is a small local server answering the job (naming its results file) and serving
that file from disk. Prints wall times, peak RSS, ratios, the load average and the machine.

    .venv/bin/python bench/results.py [--records 1000] [--image-kb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from machine import describe  # bench/ is on the path: the scripts run from there

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JOB = "job_bench0000000001"


def make_results(path: Path, records: int, image_kb: int) -> None:
    """A Gemini-style results file: every record one PNG of about `image_kb` KB, inline."""
    body = os.urandom(image_kb * 1024)
    png = b"\x89PNG\r\n\x1a\n" + body
    data = base64.b64encode(png).decode()
    with path.open("w") as f:
        for i in range(records):
            parts = [{"inlineData": {"mimeType": "image/png", "data": data}}]
            line = {"key": f"r{i}", "response": {"candidates": [{"content": {"parts": parts}}]}}
            line["request"] = {"contents": [{"parts": [{"text": f"prompt {i}"}]}]}
            f.write(json.dumps(line) + "\n")


def serve(path: Path, port_box) -> None:  # type: ignore[no-untyped-def]
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    from batchjob.sandbox_server import listening_socket

    sock = listening_socket()  # no Nagle's delay on kept connections
    port_box.value = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port_box.value}"

    async def job(request):  # type: ignore[no-untyped-def]
        return JSONResponse(
            {
                "job_id": JOB,
                "status": "completed",
                "total": 1,
                "completed": 1,
                "failed": 0,
                "output_file_url": f"{base}/results.jsonl",
            }
        )

    async def results(request):  # type: ignore[no-untyped-def]
        return FileResponse(path, media_type="application/jsonl")

    app = Starlette(routes=[Route(f"/v1/batch/jobs/{JOB}", job), Route("/results.jsonl", results)])
    uvicorn.Server(uvicorn.Config(app, log_level="error")).run(sockets=[sock])


class Sink:
    """A channel that takes what is sent and keeps only when and how much."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.album_s = self.zip_s = 0.0
        self.bytes = 0

    async def send_text(self, chat_id, text, buttons=None):  # type: ignore[no-untyped-def]
        return 1

    async def send_images(self, chat_id, images):  # type: ignore[no-untyped-def]
        self.bytes += sum(p.stat().st_size for p, _ in images)
        self.album_s = time.perf_counter() - self.t0

    async def send_document(self, chat_id, filename, data, caption=None):  # type: ignore[no-untyped-def]
        self.bytes += data.stat().st_size if isinstance(data, Path) else len(data)
        if filename.endswith(".zip"):
            self.zip_s = time.perf_counter() - self.t0


def ours(base: str, media: str, out) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        from batchjob.client import BatchJobClient
        from conversation.results_view import ResultsView
        from conversation.settings import ConversationSettings

        settings = ConversationSettings(
            media_dir=Path(media), results_zip_max_bytes=1 << 40, results_max_images=100_000
        )

        class Store:
            async def job(self, job_id):  # type: ignore[no-untyped-def]
                return {}

        async with BatchJobClient(base, "t") as client:
            sink = Sink(time.perf_counter())
            await ResultsView(client, sink, Store(), Path(media), settings).show("tg:1", "en", JOB)  # type: ignore[arg-type]
        if not (sink.album_s and sink.zip_s):
            raise SystemExit("no album or no ZIP was sent")
        out.put((sink.album_s, sink.zip_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))

    asyncio.run(run())


def naive(base: str, media: str, out) -> None:  # type: ignore[no-untyped-def]
    import httpx

    t0 = time.perf_counter()
    with httpx.Client() as c:
        raw = c.get(f"{base}/results.jsonl").content  # the whole file in memory
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    images = [
        base64.b64decode(p["inlineData"]["data"])
        for r in rows
        for p in r["response"]["candidates"][0]["content"]["parts"]
    ]
    album_s = time.perf_counter() - t0  # the album's images are in memory now
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i, img in enumerate(images):
            z.writestr(f"row-{i + 2}.png", img)
    zip_s = time.perf_counter() - t0
    out.put((album_s, zip_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(fn, base: str, media: str) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(base, media, q))
    p.start()
    while p.is_alive() or not q.empty():
        try:
            got = q.get(timeout=1)
        except Exception:
            continue
        p.join()
        return got
    raise SystemExit(f"{fn.__name__} failed (exit {p.exitcode})")


def main(records: int, image_kb: int) -> None:
    print(describe())
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        rows = []
        for n in (records // 4, records):
            data = Path(tmp) / f"results-{n}.jsonl"
            make_results(data, n, image_kb)
            ctx = multiprocessing.get_context("spawn")
            port = ctx.Value("i", 0)
            server = ctx.Process(target=serve, args=(data, port), daemon=True)
            server.start()
            while not port.value:
                time.sleep(0.05)
            time.sleep(0.5)
            base = f"http://127.0.0.1:{port.value}"
            media = Path(tmp) / f"media-{n}"
            media.mkdir()
            for name, fn in (("ours", ours), ("naive", naive)):
                if name == "naive" and n != records:
                    continue
                album, zipped, rss = measure(fn, base, str(media))
                rows.append((name, n, album, zipped, rss))
            server.kill()
            data.unlink()
    print(f"\n{records} records of ~{image_kb} KB images (inline base64), Results pressed once:")
    print(f"{'route':6} {'records':>8} {'to album s':>11} {'to ZIP s':>9} {'peak RSS MiB':>13}")
    for name, n, album, zipped, rss in rows:
        print(f"{name:6} {n:>8} {album:>11.2f} {zipped:>9.2f} {rss:>13.1f}")
    ours_full = next(r for r in rows if r[0] == "ours" and r[1] == records)
    ours_quarter = next(r for r in rows if r[0] == "ours" and r[1] == records // 4)
    naive_full = next(r for r in rows if r[0] == "naive")
    print(
        f"\nratios (ours / naive, same run): to album {ours_full[2] / naive_full[2]:.2f}x, "
        f"to ZIP {ours_full[3] / naive_full[3]:.2f}x, peak RSS {ours_full[4] / naive_full[4]:.3f}x"
    )
    flat = ours_full[4] / ours_quarter[4]
    print(f"ours, peak RSS at {records} vs {records // 4} records: {flat:.2f}x (flat: ~1)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--image-kb", type=int, default=1024)
    a = ap.parse_args()
    main(a.records, a.image_kb)
