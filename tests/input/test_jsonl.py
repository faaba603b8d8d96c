import orjson

from batchjob.input import convert_file, inspect_file


def test_line_kinds_and_unwrapping(write, tmp_path):
    src = write(
        "p.jsonl",
        "\n".join(
            [
                '{"contents": [{"role": "user", "parts": [{"text": "fox"}]}]}',
                '{"request": {"contents": [{"parts": [{"text": "owl"}]}],'
                ' "generationConfig": {"imageConfig": {"aspectRatio": "16x9"}}}}',
                '{"key": "k3", "request": {"contents": [{"parts": [{"text": "cat"}]}]}}',
                '{"prompt": "dog", "aspect_ratio": "1:1", "image_urls": ["https://a.com/d.png"]}',
                '{"提示词": "一只猫", "比例": "3:4"}',
                "",
            ]
        )
        + "\n",
    )
    out = tmp_path / "o.jsonl"
    r = convert_file(src, out)
    assert r.ok, r.errors
    assert r.kind == "mixed" and r.valid == 5 and r.skipped == 1
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [g["contents"][0]["parts"][0]["text"] for g in got] == ["fox", "owl", "cat", "dog", "一只猫"]
    assert all(g["generationConfig"]["responseModalities"] == ["IMAGE", "TEXT"] for g in got)
    assert got[1]["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    assert "key" not in got[2] and "request" not in got[2]


def test_vertex_config_kept(write, tmp_path):
    src = write(
        "p.jsonl",
        '{"contents": [{"parts": [{"text": "fox"}]}], "generationConfig":'
        ' {"responseModalities": ["IMAGE"], "temperature": 0.4}}\n',
    )
    out = tmp_path / "o.jsonl"
    convert_file(src, out)
    assert orjson.loads(out.read_bytes())["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "temperature": 0.4,
    }


def test_openai_batch_file_rejected_with_guidance(write):
    line = '{"custom_id": "1", "method": "POST", "url": "/v1/images", "body": {"prompt": "fox"}}'
    r = inspect_file(write("p.jsonl", line + "\n" + line + "\n"))
    assert r.kind == "openai_batch"
    assert r.fatal.code == "openai_batch_format"
    assert [e.code for e in r.errors] == ["openai_batch_line"] * 2


def test_invalid_json_reported_with_line_numbers(write):
    r = inspect_file(
        write(
            "p.jsonl", '{"prompt": "a"}\n{"prompt": \n[1,2]\n{"foo": 1}\n{"contents": []}\n{"prompt": ""}\n'
        )
    )
    assert [(e.row, e.code) for e in r.errors] == [
        (2, "json_invalid"),
        (3, "json_not_object"),
        (4, "unknown_line_schema"),
        (5, "contents_invalid"),
        (6, "prompt_empty"),
    ]
    assert (r.valid, r.invalid) == (1, 5)


def test_vertex_file_uris_checked(write):
    r = inspect_file(
        write(
            "p.jsonl",
            '{"contents": [{"parts": [{"text": "a"}, {"fileData":'
            ' {"fileUri": "http://192.168.0.2/x.png", "mimeType": "image/png"}}]}]}\n'
            '{"contents": [{"parts": [{"text": "b"}, {"fileData":'
            ' {"fileUri": "gs://bucket/x.png", "mimeType": "image/png"}}]}]}\n',
        )
    )
    assert [(e.row, e.code) for e in r.errors] == [(1, "image_url_not_public")]
    assert r.valid == 1


def test_unknown_keys_noted_once(write):
    r = inspect_file(write("p.jsonl", '{"prompt": "a", "seed": 1}\n{"prompt": "b", "seed": 2}\n'))
    assert r.ok and r.warning_counts == {"field_ignored": 1}
