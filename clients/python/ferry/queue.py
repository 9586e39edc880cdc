"""A queue: send, receive with long polling, ack, nack; requests go to the queue's
leader (followed through NOT_LEADER answers and metadata)."""

from typing import Dict, List, Mapping, Optional, Sequence

from ferry.client import Client
from ferry.errors import FerryError
from ferry.v1 import queue_pb2


class Queue:
    """Queue `name` of `client`'s deployment."""

    def __init__(self, client: Client, name: str):
        self._client = client
        self.name = name
        self._route = ("queue", name, 0)

    def _call(self, method: str, request):
        return self._client.call("QueueService", method, request, route=self._route)

    def send(
        self,
        body: bytes,
        attributes: Optional[Mapping[str, str]] = None,
        delay_ms: Optional[int] = None,
        group_id: str = "",
        dedup_id: str = "",
    ) -> str:
        """Sends one message; returns its id."""
        message = queue_pb2.SendMessage(
            body=body, attributes=dict(attributes or {}), group_id=group_id, dedup_id=dedup_id
        )
        if delay_ms is not None:
            message.delay_ms = delay_ms
        return self.send_batch([message])[0]

    def send_batch(self, messages: Sequence[queue_pb2.SendMessage]) -> List[str]:
        """Sends several messages in one request; their ids, in order."""
        answer = self._call("Send", queue_pb2.SendRequest(queue=self.name, messages=list(messages)))
        return [result.message_id for result in answer.results]

    def receive(
        self,
        max_messages: int = 10,
        wait_ms: int = 1000,
        visibility_timeout_ms: Optional[int] = None,
    ) -> List[queue_pb2.ReceivedMessage]:
        """Up to `max_messages` messages, waiting up to `wait_ms` for the first; each
        stays invisible to others until acked or its visibility timeout passes."""
        request = queue_pb2.ReceiveRequest(queue=self.name, max_messages=max_messages, wait_ms=wait_ms)
        if visibility_timeout_ms is not None:
            request.visibility_timeout_ms = visibility_timeout_ms
        timeout = max(self._client.timeout, wait_ms / 1000.0 + 5.0)
        answer = self._client.call("QueueService", "Receive", request, route=self._route, timeout=timeout)
        return list(answer.messages)

    def ack(self, *receipts: str) -> None:
        """Acknowledges received messages: they are gone. Raises the first failure
        (a receipt that is stale: the message was received again meanwhile)."""
        answer = self._call("Ack", queue_pb2.AckRequest(queue=self.name, receipts=list(receipts)))
        self._raise_failures(answer.results)

    def nack(self, *receipts: str, delay_ms: int = 0) -> None:
        """Hands received messages back, visible again after `delay_ms`."""
        answer = self._call("Nack", queue_pb2.NackRequest(
            queue=self.name, receipts=list(receipts), delay_ms=delay_ms))
        self._raise_failures(answer.results)

    def describe(self) -> queue_pb2.QueueInfo:
        """The queue's settings and counts."""
        return self._call("DescribeQueue", queue_pb2.DescribeQueueRequest(name=self.name)).queue

    @staticmethod
    def _raise_failures(results) -> None:
        failures: Dict[str, FerryError] = {
            r.receipt: FerryError.from_detail(r.error)
            for r in results
            if r.HasField("error") and r.error.code
        }
        if failures:
            raise next(iter(failures.values()))
