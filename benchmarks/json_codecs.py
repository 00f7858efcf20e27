"""The JSON libraries on the hot paths, side by side: the stdlib's json, orjson and msgspec.

What each path reads or writes, as it does: a result POST's body decoded (benchmarks/big_body.py,
the global moths model's arrays), a result's payload written for the inbox once its arrays are
cut out (api/result_entries.py), a NATS task message written and read (task_queue.task_message,
api/routes_tasks.py), a job's progress read back from jsonb (storage/pool.py). Prints the time per
call of each library (best of ``--rounds``) and how many times faster than the stdlib it is.

    .venv/bin/python benchmarks/json_codecs.py [--body-mb 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import msgspec
import orjson

from benchmarks.big_body import build_body
from core.progress import new_ml_progress


def _tasks(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": str(i),
            "image_id": str(i),
            "image_url": f"https://minio.example.org/antenna/captures/2024/07/{i:08d}.jpg",
            "reply_subject": f"$JS.ACK.job_1.job-1-consumer.1.{i}.{i}.1720000000000000000.0",
        }
        for i in range(1, n + 1)
    ]


def _stored_result(detections: int) -> dict[str, Any]:
    """A result as api/result_entries writes it to the inbox: arrays cut, n_scores left."""
    now = "2024-07-01T12:00:00.123456+00:00"
    return {
        "pipeline": "moths",
        "algorithms": {},
        "total_time": 1.5,
        "source_images": [{"id": "123456", "url": "https://minio.example.org/a/123456.jpg"}],
        "detections": [
            {
                "source_image_id": "123456",
                "bbox": {"x1": 10.0 * i, "y1": 5.0, "x2": 10.0 * i + 80.5, "y2": 90.25},
                "inference_time": 0.05,
                "algorithm": {"name": "Detector", "key": "detector-key"},
                "timestamp": now,
                "crop_image_url": None,
                "classifications": [
                    {
                        "classification": "Noctua pronuba",
                        "labels": None,
                        "n_scores": 29_176,
                        "inference_time": 0.4,
                        "algorithm": {"name": "Moths 2024", "key": "classifier-key"},
                        "terminal": True,
                        "timestamp": now,
                    }
                ],
            }
            for i in range(detections)
        ],
    }


def _decoders(data: bytes) -> dict[str, Callable[[], object]]:
    return {
        "json": lambda: json.loads(data),
        "orjson": lambda: orjson.loads(data),
        "msgspec": lambda: msgspec.json.decode(data),
    }


def _encoders(value: object) -> dict[str, Callable[[], object]]:
    """Each to UTF-8 bytes, as a NATS message or a bytes parameter wants it."""
    return {
        "json": lambda: json.dumps(value).encode(),
        "orjson": lambda: orjson.dumps(value),
        "msgspec": lambda: msgspec.json.encode(value),
    }


def _time(call: Callable[[], object], rounds: int, number: int) -> float:
    """Seconds per call, the best of ``rounds`` rounds of ``number`` calls (the least disturbed
    by whatever else the machine runs)."""
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            call()
        per_call.append((time.perf_counter() - start) / number)
    return min(per_call)


def _row(what: str, calls: dict[str, Callable[[], object]], rounds: int, number: int) -> None:
    times = {name: _time(call, rounds, number) for name, call in calls.items()}
    base = times["json"]
    figures = "  ".join(
        f"{name} {t * 1e6:10.1f} us ({base / t:4.1f}x)" for name, t in times.items()
    )
    print(f"{what:<44} {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body-mb", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = args.rounds

    body = build_body(_tasks(24), args.body_mb)
    _row(f"decode a result POST body ({len(body) / 1e6:.0f} MB)", _decoders(body), rounds, 1)
    for detections in (5, 100):
        result = _stored_result(detections)
        _row(f"encode a stored result ({detections} detections)", _encoders(result), rounds, 2000)
        stored = json.dumps(result).encode()
        _row(f"decode a stored result ({detections} detections)", _decoders(stored), rounds, 2000)
    url = "https://minio.example.org/antenna/captures/2024/07/00000001.jpg"
    _row("encode a NATS task message's image URL", _encoders(url), rounds, 100_000)
    message = json.dumps(_tasks(1)[0]).encode()
    _row("decode a NATS task message", _decoders(message), rounds, 100_000)
    progress = json.dumps(new_ml_progress().as_json()).encode()
    _row("decode a job's progress (jsonb)", _decoders(progress), rounds, 20_000)


if __name__ == "__main__":
    main()
