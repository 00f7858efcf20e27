"""Who else consumes the jobs queue: RabbitMQ's management API names their connections.

AMQP itself only counts a queue's consumers. With the management plugin (``rabbitmq-plugins
enable rabbitmq_management``) and ``ANTENNA_JOBS_ANTENNA_MANAGEMENT_URL`` set, the bridge asks it
for the queue's consumers and names the ones that are not its own connection (told apart by the
bridge's own socket address as the broker sees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx


@dataclass(frozen=True)
class ForeignConsumer:
    # The broker's name of the connection ("10.0.3.7:41234 -> 10.0.3.2:5672").
    connection: str
    # The name its client gave it (AMQP's connection_name client property), if any.
    given_name: str | None = None
    product: str | None = None
    user: str | None = None

    def describe(self) -> str:
        named = f"{self.given_name!r} " if self.given_name else ""
        extra = ", ".join(x for x in (self.product, self.user and f"user {self.user}") if x)
        return f"{named}({self.connection}{', ' + extra if extra else ''})"


def _auth(url: str) -> tuple[str, httpx.Auth | None]:
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    return parts._replace(netloc=netloc).geturl(), auth


def foreign_consumers(
    management_url: str, vhost: str, queue: str, own_peer: tuple[str, int], timeout: float
) -> list[ForeignConsumer]:
    """The consumers of ``queue`` whose connection is not the one from ``own_peer`` (the bridge's
    local address); an empty list when the broker names none."""
    base, auth = _auth(management_url.rstrip("/"))
    url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
    found: list[ForeignConsumer] = []
    with httpx.Client(auth=auth, timeout=timeout) as client:
        answer = client.get(url)
        answer.raise_for_status()
        for detail in answer.json().get("consumer_details") or []:
            channel: dict[str, Any] = detail.get("channel_details") or {}
            name = channel.get("connection_name")
            if not name:
                # Listed before the management API filled in its channel (seconds after it
                # appears): not yet known, not even whether it is the bridge's own; a later look
                # names it.
                continue
            host, port = str(channel.get("peer_host", "")), int(channel.get("peer_port") or 0)
            if port == own_peer[1] and host in {own_peer[0], "127.0.0.1", "::1"}:
                continue
            found.append(_described(client, base, str(name), channel))
    return found


def _described(
    client: httpx.Client, base: str, name: str, channel: dict[str, Any]
) -> ForeignConsumer:
    """The connection as its client named it (a second call: the queue lists only addresses)."""
    user = channel.get("user")
    answer = client.get(f"{base}/api/connections/{quote(name, safe='')}")
    if answer.status_code != 200:  # closed meanwhile
        return ForeignConsumer(connection=name, user=user)
    info: dict[str, Any] = answer.json()
    props: dict[str, Any] = info.get("client_properties") or {}
    given = info.get("user_provided_name") or props.get("connection_name")
    return ForeignConsumer(
        connection=name,
        given_name=str(given) if given else None,
        product=str(props["product"]) if props.get("product") else None,
        user=str(user) if user else None,
    )
