"""The task publisher against a real NATS: a page is done when JetStream acked every message;
a message no stream stores fails its page (an outage the activity retries)."""

from __future__ import annotations

import uuid

import pytest
from nats.js.api import StreamConfig

from activities.async_api.publisher import JetStreamPublisher, PageAcks
from core.errors import PublishNotAcknowledged


async def test_a_page_is_done_when_every_message_is_acked(nats_client):
    js = nats_client.jetstream()
    name = f"test_publisher_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.tasks"]))
    try:
        # A window smaller than the page: publishing waits for acks to make room.
        async with JetStreamPublisher(nats_client, window=8, ack_timeout=10) as publisher:
            page = PageAcks()
            for i in range(100):
                await publisher.publish(f"{name}.tasks", b"{}", str(i % 90), page)
            page.seal()
            await publisher.acked(page)
        info = await js.stream_info(name)
        assert info.state.messages == 90  # the 10 repeated Nats-Msg-Ids were dropped
        assert page.sent == 100
    finally:
        await js.delete_stream(name)


async def test_a_message_no_stream_stores_fails_its_page(nats_client):
    async with JetStreamPublisher(nats_client, window=8, ack_timeout=10) as publisher:
        page = PageAcks()
        await publisher.publish(f"nowhere_{uuid.uuid4().hex}", b"{}", "1", page)
        page.seal()
        with pytest.raises(PublishNotAcknowledged, match="503"):
            await publisher.acked(page)
