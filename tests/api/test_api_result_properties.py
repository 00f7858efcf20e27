"""Issue 7, as a property: for any mix of valid and invalid entries in one /result/ post, every
valid entry is stored exactly once and every invalid one is refused with its field path.

Bounded in CI (ANTENNA_JOBS_TEST_PROFILE=ci, `make test`); `make fuzz` runs more examples.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antenna_db.seed import CLASSIFIER_KEY, DETECTOR_KEY
from core.states import JobState
from tests.helpers.api import Api
from tests.helpers.jobs import make_job

pytestmark = pytest.mark.fuzz
EXAMPLES = 200 if os.environ.get("ANTENNA_JOBS_TEST_PROFILE") == "full" else 25
_serial = itertools.count(1)

# Each kind: (valid?, how the entry is broken). "@X@" strings become raw JSON tokens.
VALID = ["success", "error", "extreme_numbers", "unknown_fields"]
INVALID = [
    "nan_score",
    "infinite_bbox",
    "huge_time",
    "nul_label",
    "surrogate_url",
    "empty_scores",
    "no_reply_subject",
    "foreign_reply_subject",
    "no_result",
    "no_pipeline",
    "bbox_is_text",
    "scores_are_text",
    "detections_object",
    "not_an_object",
    "bad_image_id",
    "too_deep",
]
TOKENS = {"@NAN@": "NaN", "@INF@": "-Infinity", "@HUGE@": "1e400", "@DEEP@": "[" * 80 + "]" * 80}


def _result(image_id: str, scores: int) -> dict[str, Any]:
    now = "2024-06-01T22:00:00+00:00"
    return {
        "pipeline": "moths",
        "total_time": 0.5,
        "source_images": [{"id": image_id, "url": f"https://x/{image_id}.jpg"}],
        "detections": [
            {
                "source_image_id": image_id,
                "bbox": {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0},
                "inference_time": 0.01,
                "algorithm": {"name": "Detector", "key": DETECTOR_KEY},
                "timestamp": now,
                "classifications": [
                    {
                        "classification": "Noctua pronuba",
                        "labels": [f"label {i}" for i in range(scores)],
                        "scores": [1.0 / scores] * scores,
                        "logits": [0.1] * scores,
                        "algorithm": {"name": "Classifier", "key": CLASSIFIER_KEY},
                        "timestamp": now,
                    }
                ],
            }
        ],
    }


def build(kind: str, subject: str, image_id: str, scores: int, spot: int) -> Any:
    """One entry of ``kind``; ``spot`` picks which array element a bad value replaces."""
    result = _result(image_id, scores)
    det = result["detections"][0]
    cls = det["classifications"][0]
    at = spot % scores
    match kind:
        case "success":
            pass
        case "error":
            result = {"error": f"download failed ({spot})", "image_id": image_id}
        case "extreme_numbers":
            cls["scores"][at] = 1e-300
            det["bbox"]["x2"] = 1e300
        case "unknown_fields":
            result["config"] = {"x": [1, {"y": "@NAN@"}]}  # ignored, even though it is NaN
            result["algorithms"] = {}
        case "nan_score":
            cls["scores"][at] = "@NAN@"
        case "infinite_bbox":
            det["bbox"]["y1"] = "@INF@"
        case "huge_time":
            det["inference_time"] = "@HUGE@"
        case "nul_label":
            cls["labels"][at] = "moth\u0000"
        case "surrogate_url":
            result["source_images"][0]["url"] = "https://x/\ud83d.jpg"
        case "empty_scores":
            cls["scores"] = []
        case "no_reply_subject":
            return {"result": result}
        case "foreign_reply_subject":
            return {"reply_subject": "$JS.ACK.job_1.job-1-consumer.1.1.1.1.0", "result": result}
        case "no_result":
            return {"reply_subject": subject}
        case "no_pipeline":
            del result["pipeline"]
        case "bbox_is_text":
            det["bbox"] = "left"
        case "scores_are_text":
            cls["scores"] = "high"
        case "detections_object":
            result["detections"] = {"0": det}
        case "not_an_object":
            return [subject, spot]
        case "bad_image_id":
            result["source_images"][0]["id"] = f"img-{image_id}"
        case "too_deep":
            result["config"] = "@DEEP@"
    return {"reply_subject": subject, "result": result}


def encode(body: Any) -> bytes:
    text = json.dumps(body)
    for placeholder, token in TOKENS.items():
        text = text.replace(f'"{placeholder}"', token)
    return text.encode()


@pytest_asyncio.fixture(name="job")
async def job_fixture(pool):
    return await make_job(pool, images=1, status=JobState.STARTED)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(VALID + INVALID), min_size=1, max_size=8),
    scores=st.integers(min_value=1, max_value=40),
    spot=st.integers(min_value=0, max_value=10_000),
)
async def test_each_valid_entry_stored_once_each_invalid_named(
    api: Api, pool, streams, job, kinds, scores, spot
):
    # A real task per entry (the API matches each result with its task's image).
    images = [10**6 + next(_serial) for _ in kinds]
    await streams.publish(job.id, [(i, f"https://x/{i}.jpg") for i in images])
    fetched = await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": len(images)})
    reply_of = {int(t["image_id"]): t["reply_subject"] for t in fetched.json()["tasks"]}
    assert set(reply_of) == set(images)
    subjects, entries = [], []
    for i, (kind, image) in enumerate(zip(kinds, images, strict=True)):
        subjects.append(reply_of[image])
        entries.append(build(kind, subjects[-1], str(image), scores, spot + i))
    content = encode({"results": copy.deepcopy(entries)})
    response = await api.client.post(
        f"/jobs/{job.id}/result/", content=content, headers={"Content-Type": "application/json"}
    )
    valid = [i for i, kind in enumerate(kinds) if kind in VALID]
    invalid = [i for i, kind in enumerate(kinds) if kind in INVALID]
    body = response.json()
    assert response.status_code == (400 if invalid else 200), body
    assert body["results_queued"] == len(valid)
    assert [t["reply_subject"] for t in body["tasks"]] == [subjects[i] for i in valid]
    errors = body.get("errors", [])
    for i in invalid:
        mine = [e for e in errors if e["index"] == i]
        assert mine, (kinds[i], errors)
        assert all(e["field"].startswith(f"results[{i}]") and e["message"] for e in mine)
    assert {e["index"] for e in errors} == set(invalid)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT reply_subject, count(*) AS n FROM result_inbox"
            " WHERE job_id = %s AND reply_subject = ANY(%s) GROUP BY reply_subject",
            (job.id, subjects),
        )
        stored = {r["reply_subject"]: r["n"] for r in await cur.fetchall()}
    assert stored == {subjects[i]: 1 for i in valid}
