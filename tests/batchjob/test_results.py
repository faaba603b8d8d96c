"""The results reader: every shape a service may give its per-record outcomes in."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchjob import results
from batchjob.client import BatchJobClient
from batchjob.models import Job
from batchjob.results import Decoder, ResultLimits, ResultsError, outcome, records
from tests.conftest import TOKEN

LIMITS = ResultLimits()
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 32


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def gemini(*parts: dict) -> dict:
    return {"response": {"candidates": [{"content": {"role": "model", "parts": list(parts)}}]}}


def read(tmp_path, text: str, decode: bool = True) -> list:
    path = tmp_path / "results"
    path.write_text(text)
    out = tmp_path / "images"
    out.mkdir(exist_ok=True)
    return list(records(path, LIMITS, Decoder(out, LIMITS) if decode else None))


def test_gemini_lines_inline_images_are_decoded_to_files_file_uris_and_text_kept(tmp_path):
    lines = [
        {"key": "a", **gemini({"text": "here"}, {"inlineData": {"mimeType": "image/png", "data": b64(PNG)}})},
        {"key": "b", **gemini({"inline_data": {"mime_type": "image/jpeg", "data": b64(JPEG)}})},
        {
            "key": "c",
            **gemini({"fileData": {"fileUri": "https://cdn.example/c.webp", "mimeType": "image/webp"}}),
        },
        {"key": "d", "error": {"code": 500, "message": "blocked"}},
        {"key": "e", **gemini({"inlineData": {"mimeType": "image/png", "data": b64(b"<html>not an image")}})},
        {"key": "f", **gemini({"inlineData": {"mimeType": "image/png", "data": "%%% not base64"}})},
        {"key": "g", **gemini({"inlineData": {"data": b64(WEBP)}})},
    ]
    got = read(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n")
    assert [o.key for o in got] == list("abcdefg") and [o.record for o in got] == list(range(7))
    assert [o.status for o in got] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
        "unknown",
        "unknown",
        "succeeded",
    ]
    a = got[0]
    assert [x.kind for x in a.outputs] == ["text", "image_file"]
    assert (tmp_path / "images" / "1-1.png").read_bytes() == PNG  # named by the record (1-based)
    assert got[1].images()[0].mime == "image/jpeg" and got[6].images()[0].mime == "image/webp"
    assert got[2].outputs[0].value == "https://cdn.example/c.webp"
    assert got[3].error == "blocked" and got[4].outputs == [] and got[5].outputs == []
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["1-1.png", "2-1.jpg", "7-1.webp"]


@pytest.mark.parametrize(
    "record",
    [
        {"image_url": "https://x.example/1.png"},
        {"imageUrl": "https://x.example/1.png"},
        {"image_urls": ["https://x.example/1.png", "https://x.example/2.png"]},
        {"images": [{"url": "https://x.example/1.png"}, "https://x.example/2.png"]},
        {"outputs": [{"image_url": "https://x.example/1.png"}]},
        {"output": {"uri": "https://x.example/1.png"}},
    ],
)
def test_image_urls_in_every_spelling(record):
    got = outcome({"index": 4, "status": "SUCCEEDED", **record}, 0, LIMITS)
    assert got is not None and got.record == 4 and got.status == "succeeded"
    assert got.images() and all(o.value.startswith("https://x.example/") for o in got.images())


@pytest.mark.parametrize(
    "doc",
    [
        {"job_id": "j", "records": [{"index": 0, "status": "succeeded"}, {"index": 1, "status": "failed"}]},
        {"results": [{"index": 0, "status": "ok"}, {"index": 1, "error": "bad"}]},
        {"data": [{"index": 0, "state": "done"}, {"index": 1, "state": "error"}]},
        [{"index": 0, "status": "completed"}, {"index": 1, "status": "failed"}],
    ],
)
def test_json_documents_one_line_or_pretty(tmp_path, doc):
    for text in (json.dumps(doc), json.dumps(doc, indent=2)):
        got = read(tmp_path, text)
        assert [(o.record, o.status) for o in got] == [(0, "succeeded"), (1, "failed")]


def test_malformed_and_oversized_results_are_errors_not_crashes(tmp_path):
    with pytest.raises(ResultsError) as bad:
        read(tmp_path, '{"records": [{"index": 0}, ')
    assert bad.value.reason == "malformed"
    with pytest.raises(ResultsError):
        read(tmp_path, '{"a": 1}\n{not json\n')
    assert read(tmp_path, "") == []
    path = tmp_path / "many"
    path.write_text("\n".join(json.dumps({"index": i}) for i in range(5)))
    with pytest.raises(ResultsError) as many:
        list(records(path, ResultLimits(max_records=3)))
    assert many.value.reason == "too_many"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
_keys = st.sampled_from(
    ["index", "status", "error", "image_url", "images", "outputs", "response", "prompt", "key"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=6))
def test_any_record_shape_becomes_an_outcome(record):
    got = outcome(record, 3, LIMITS)
    assert got is not None and got.status in ("succeeded", "failed", "unknown")
    assert all(o.kind in ("image_url", "image_file", "text") for o in got.outputs)


async def test_the_sandbox_serves_both_routes(sandbox, write, tmp_path):
    sandbox.state.config.fail_marker = "FAIL"
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        up = await client.upload(
            write("p.csv", "prompt,aspect_ratio\na red fox,16:9\nFAIL this,1:1\nan owl,9:16\n")
        )
        job = await client.submit(up.file_id)
        while not (job := await client.get_job(job.job_id)).terminal:
            await asyncio.sleep(0.02)
        assert job.results_url and job.output_summary_url
        out = tmp_path / "img"
        out.mkdir()
        path = await results.download(client, job, tmp_path / "r.jsonl", LIMITS, allow_loopback=True)
        got = list(records(path, LIMITS, Decoder(out, LIMITS)))
        assert [o.status for o in got] == ["succeeded", "failed", "succeeded"]
        assert got[0].prompt == "a red fox" and got[1].error
        from PIL import Image

        fox, owl = Image.open(got[0].images()[0].value), Image.open(got[2].images()[0].value)
        assert fox.width > fox.height and owl.height > owl.width  # the records' aspect ratios
        # The summary route: image URLs, when the job names no results file.
        summary_only = Job.model_validate(
            {"job_id": job.job_id, "output_summary_url": job.output_summary_url}
        )
        path = await results.download(client, summary_only, tmp_path / "s.json", LIMITS)
        got = list(records(path, LIMITS))
        assert [o.status for o in got] == ["succeeded", "failed", "succeeded"]
        assert got[0].images()[0].value.endswith("/0.png") and not got[1].images()
        assert (
            await results.download(client, Job.model_validate({"job_id": "x"}), tmp_path / "n", LIMITS)
            is None
        )


async def test_a_results_file_named_only_by_its_id_is_read_with_the_token(sandbox, write, tmp_path):
    sandbox.state.config.results_file_id = True
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        up = await client.upload(write("p.csv", "prompt\na fox\nan owl\n"))
        job = await client.submit(up.file_id)
        while not (job := await client.get_job(job.job_id)).terminal:
            await asyncio.sleep(0.02)
        assert job.result_file_id and not job.results_url
        only_id = Job.model_validate({"job_id": job.job_id, "result_file_id": job.result_file_id})
        path = await results.download(client, only_id, tmp_path / "r", LIMITS)
        out = tmp_path / "img"
        out.mkdir()
        got = list(records(path, LIMITS, Decoder(out, LIMITS)))
        assert [o.status for o in got] == ["succeeded", "succeeded"] and len(list(out.iterdir())) == 2
    async with BatchJobClient(sandbox.url, "wrong-token") as stranger:
        assert await results.download(stranger, only_id, tmp_path / "s", LIMITS) is None


async def test_a_results_file_over_the_cap_is_not_kept(sandbox, write, tmp_path):
    async with BatchJobClient(sandbox.url, TOKEN) as client:
        up = await client.upload(write("p.csv", "prompt\na fox\n"))
        job = await client.submit(up.file_id)
        while not (job := await client.get_job(job.job_id)).terminal:
            await asyncio.sleep(0.02)
        tiny = ResultLimits(max_document_bytes=100)  # the results file and the summary are larger
        assert await results.download(client, job, tmp_path / "r", tiny) is None
        assert not (tmp_path / "r").exists()
