"""The service's own curl examples, run unchanged against the sandbox."""

from __future__ import annotations

import shutil
import subprocess

import orjson
import pytest

from tests.batchjob.conftest import TOKEN

pytestmark = [
    pytest.mark.skipif(not (shutil.which("curl") and shutil.which("base64")), reason="needs curl"),
    pytest.mark.parametrize("sandbox", ["ours"], indirect=True),  # the README shows these shapes
]


def sh(script: str, env: dict[str, str]) -> dict:
    out = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, env=env, check=True)
    return orjson.loads(out.stdout)


def test_curl_examples(sandbox, tmp_path):
    (tmp_path / "prompts.jsonl").write_text(
        '{"contents": [{"role": "user", "parts": [{"text": "a red fox"}]}]}\n'
        '{"contents": [{"role": "user", "parts": [{"text": "an owl"}]}]}\n'
    )
    env = {
        "BASE": sandbox.url,
        "BATCHJOB_BEARER_TOKEN": TOKEN,
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    auth = '-H "Authorization: Bearer $BATCHJOB_BEARER_TOKEN" -H "Content-Type: application/json"'
    up = sh(
        f"cd {tmp_path}\n"
        f'curl -sS -X POST "$BASE/v1/batch/files:upload" {auth} '
        '-d "{\\"filename\\":\\"prompts.jsonl\\",\\"mode\\":\\"fast\\",'
        '\\"content\\":\\"$(base64 -w0 prompts.jsonl)\\"}"',
        env,
    )
    assert up["row_count"] == 2
    est = sh(
        f'curl -sS -X POST "$BASE/v1/batch/jobs:precheck" {auth} '
        """-d '{"record_count": 2, "model": "google/gemini-2.5-flash-image", "mode": "fast"}'""",
        env,
    )
    assert est["record_count"] == 2 and "estimated_cost" in est
    job = sh(
        f'curl -sS -X POST "$BASE/v1/batch/jobs" {auth} '
        f"""-d '{{"file_id": "{up["file_id"]}", "model": "google/gemini-2.5-flash-image", """
        """"mode": "fast"}'""",
        env,
    )
    assert job["status"] == "queued"
    got = sh(f'curl -sS "$BASE/v1/batch/jobs/{job["job_id"]}" {auth}', env)
    assert got["job_id"] == job["job_id"]
    listed = sh(f'curl -sS "$BASE/v1/batch/jobs?page=1&page_size=10&status=" {auth}', env)
    assert any(j["job_id"] == job["job_id"] for j in listed["items"])
    sandbox.state.config.records_per_second = 0.01
    job2 = sh(f'curl -sS -X POST "$BASE/v1/batch/jobs" {auth} -d \'{{"file_id": "{up["file_id"]}"}}\'', env)
    cancelled = sh(
        f'curl -sS -X POST "$BASE/v1/batch/jobs/{job2["job_id"]}:cancel" {auth} -d \'{{"reason": "test"}}\'',
        env,
    )
    assert cancelled["status"] == "cancelled"
    err = sh('curl -sS "$BASE/v1/batch/jobs" -H "Authorization: Bearer nope"', env)
    assert err["error"]["code"] == "unauthorized"
