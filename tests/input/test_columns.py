import pytest

from batchjob.input.columns import field_for


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("prompt", "prompt"),
        ("  PROMPT ", "prompt"),
        ("Prompts", "prompt"),
        ("提示词", "prompt"),
        ("Prompt (提示词)", "prompt"),
        ("提示词*", "prompt"),
        ("prompt_text", "prompt"),
        ("正向提示词", "prompt"),
        ("Aspect Ratio", "aspect_ratio"),
        ("aspect-ratio", "aspect_ratio"),
        ("比例", "aspect_ratio"),
        ("宽高比", "aspect_ratio"),
        ("Image URLs", "image_urls"),
        ("image_url", "image_urls"),
        ("参考图", "image_urls"),
        ("图片链接", "image_urls"),
        ("Negative Prompt", "negative_prompt"),
        ("反向提示词", "negative_prompt"),
        ("ｐｒｏｍｐｔ", "prompt"),
        ("filename", None),
        ("", None),
        ("pic_name", None),
    ],
)
def test_header_names(header, field):
    assert field_for(header) == field
