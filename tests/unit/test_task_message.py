"""The task message written by msgspec is byte for byte the PipelineProcessingTask JSON."""

from __future__ import annotations

import pytest

from activities.async_api.task_queue import task_message
from core.schemas import PipelineProcessingTask


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/a.jpg",
        'https://x/ü/é.png?q=1&r="2"',
        "s3://bucket/with space/tab\there/line\nbreak",
        "http://x/\u2028\u2029/\U0001f98b.jpg",
        "http://x/back\\slash/\x01\x1f",
    ],
)
def test_same_bytes_as_the_model(url: str) -> None:
    model = PipelineProcessingTask(id="7", image_id="7", image_url=url, reply_subject=None)
    assert task_message(7, url) == model.model_dump_json().encode()
