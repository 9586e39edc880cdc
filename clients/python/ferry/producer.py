"""A batching producer: messages wait up to `linger` seconds (or until `batch_size`
are buffered) and go in one request per host, keyed ones to the leader of their
key's partition (CRC32C of the key, as the broker computes it), keyless ones spread
over the partitions one message at a time.

Idempotent by default: the producer takes an id from the broker (InitProducer) and
numbers the messages it sends to each partition, so a request sent again after its
answer was lost is recognised and not stored twice. `idempotent=False` sends plain
messages the broker places itself (at least once)."""

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import grpc

from ferry.client import Client
from ferry.crc32c import crc32c
from ferry.errors import FerryError
from ferry.v1 import topic_pb2


class RecordMetadata(NamedTuple):
    """Where a produced message was stored."""

    topic: str
    partition: int
    offset: int


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition a keyed message goes to: the same function the broker and the
    Rust client use."""
    return crc32c(key) % partitions if partitions else 0


class _Pending(NamedTuple):
    message: topic_pb2.Message
    future: Future


class _Entry(NamedTuple):
    """Messages placed on one partition, numbered from `base_sequence`."""

    partition: int
    base_sequence: int
    pending: List[_Pending]


class Producer:
    """Sends messages to one topic in batches. `send` returns a Future of
    RecordMetadata; `flush` waits for everything sent so far. A request whose answer
    was lost is sent again; with `idempotent` (the default) the broker stores it
    once."""

    def __init__(
        self,
        client: Client,
        topic: str,
        *,
        linger: float = 0.005,
        batch_size: int = 500,
        idempotent: bool = True,
    ):
        self._client = client
        self._topic = topic
        self._linger = linger
        self._batch_size = max(1, batch_size)
        self._idempotent = idempotent
        # The producer's identity and the next sequence per partition; dropped after
        # a batch fails for good (its sequence numbers may or may not be stored), so
        # the next batch starts over under a new identity.
        self._identity: Optional[topic_pb2.ProducerIdentity] = None
        self._sequences: Dict[int, int] = {}
        self._buffer: List[_Pending] = []
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._turn = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"ferry-producer-{topic}", daemon=True)
        self._thread.start()

    def send(
        self,
        value: bytes,
        key: Optional[bytes] = None,
        headers: Optional[Mapping[str, bytes]] = None,
        timestamp_ms: Optional[int] = None,
    ) -> Future:
        """Queues one message; the Future resolves to its RecordMetadata or a
        FerryError."""
        message = topic_pb2.Message(
            value=value,
            headers=[topic_pb2.Header(key=k, value=v) for k, v in (headers or {}).items()],
        )
        if key is not None:
            message.key = key
        if timestamp_ms is not None:
            message.timestamp_ms = timestamp_ms
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the producer is closed")
            self._buffer.append(_Pending(message, future))
            self._cond.notify_all()
        return future

    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every message sent so far is stored or failed."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._buffer or self._in_flight:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("flush timed out")
                self._cond.wait(left)

    def close(self) -> None:
        """Flushes and stops the sending thread."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._closed:
                    self._cond.wait()
                if not self._buffer and self._closed:
                    return
                # Linger for more, unless the batch is full.
                end = time.monotonic() + self._linger
                while len(self._buffer) < self._batch_size and not self._closed:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._buffer = self._buffer, []
                self._in_flight += len(batch)
            try:
                self._deliver(batch)
            except Exception as error:  # every future gets an answer
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
            with self._cond:
                self._in_flight -= len(batch)
                self._cond.notify_all()

    def _deliver(self, batch: List[_Pending]) -> None:
        if self._idempotent:
            self._deliver_placed(batch)
        else:
            self._deliver_plain(batch)

    def _deliver_plain(self, batch: List[_Pending]) -> None:
        deadline = time.monotonic() + self._client.retry_deadline
        pending = batch
        while pending:
            groups = self._group_by_host(pending)
            pending = []
            for address, group in groups.items():
                pending.extend(self._send_to(address, group, deadline))
            if pending:
                self._pause_and_refresh()

    def _pause_and_refresh(self) -> None:
        """Before sending again: a moment for leaders to move, then where they are."""
        time.sleep(0.05)
        try:
            self._client.refresh([self._topic])
        except FerryError:
            pass  # the next round's sends say what is wrong

    def _group_by_host(self, batch: List[_Pending]) -> Dict[Optional[str], List[_Pending]]:
        partitions = self._client.partitions(self._topic)
        leaders = [self._client.leader(("topic", self._topic, p)) for p in range(partitions)]
        known = sorted({address for address in leaders if address})
        groups: Dict[Optional[str], List[_Pending]] = {}
        for pending in batch:
            if pending.message.HasField("key"):
                address = leaders[partition_for_key(pending.message.key, partitions)]
            else:
                # A host puts keyless messages on a partition it leads.
                address = known[next(self._turn) % len(known)] if known else None
            groups.setdefault(address, []).append(pending)
        return groups

    def _send_to(self, address: Optional[str], group: List[_Pending], deadline: float) -> List[_Pending]:
        """Sends `group` to `address` (a server when None); the messages to send
        again (their partition's leader moved)."""
        request = topic_pb2.ProduceRequest(topic=self._topic, messages=[p.message for p in group])
        try:
            answer = self._client.call("TopicService", "Produce", request, address=address)
        except FerryError as error:
            unreachable = not error.reason and error.code == grpc.StatusCode.UNAVAILABLE
            if (error.retriable or unreachable) and time.monotonic() < deadline:
                return group
            for pending in group:
                pending.future.set_exception(error)
            return []
        failed: Dict[int, FerryError] = {
            result.partition: FerryError.from_detail(result.error)
            for result in answer.message_batches
            if result.HasField("error") and result.error.code
        }
        again = []
        for pending, position in zip(group, answer.messages):
            error = failed.get(position.partition)
            if error is None:
                pending.future.set_result(RecordMetadata(self._topic, position.partition, position.offset))
            elif error.retriable and time.monotonic() < deadline:
                again.append(pending)
            else:
                pending.future.set_exception(error)
        return again

    def _deliver_placed(self, batch: List[_Pending]) -> None:
        """The idempotent path: the producer places every message on a partition and
        numbers it; an entry sent again keeps its numbers, so the broker answers a
        retry of a stored entry with the original offsets."""
        if self._identity is None:
            answer = self._client.call("TopicService", "InitProducer", topic_pb2.InitProducerRequest())
            self._identity = topic_pb2.ProducerIdentity(
                producer_id=answer.producer_id, producer_epoch=answer.producer_epoch
            )
            self._sequences = {}
        partitions = self._client.partitions(self._topic)
        by_partition: Dict[int, List[_Pending]] = {}
        for pending in batch:
            if pending.message.HasField("key"):
                partition = partition_for_key(pending.message.key, partitions)
            else:
                partition = next(self._turn) % partitions
            by_partition.setdefault(partition, []).append(pending)
        entries = []
        for partition, members in by_partition.items():
            base = self._sequences.get(partition, 0)
            self._sequences[partition] = (base + len(members)) % (1 << 31)
            entries.append(_Entry(partition, base, members))
        deadline = time.monotonic() + self._client.retry_deadline
        failed_for_good = False
        while entries:
            groups: Dict[Optional[str], List[_Entry]] = {}
            for entry in entries:
                address = self._client.leader(("topic", self._topic, entry.partition))
                groups.setdefault(address, []).append(entry)
            entries = []
            for address, group in groups.items():
                again, failed = self._send_placed(address, group, deadline)
                entries.extend(again)
                failed_for_good = failed_for_good or failed
            if entries:
                self._pause_and_refresh()
        if failed_for_good:
            self._identity = None

    def _send_placed(
        self, address: Optional[str], group: List[_Entry], deadline: float
    ) -> Tuple[List[_Entry], bool]:
        """Sends `group` to `address` (a server when None); the entries to send
        again, and whether one failed for good."""
        request = topic_pb2.ProduceRequest(
            topic=self._topic,
            producer=self._identity,
            partition_messages=[
                topic_pb2.PartitionMessages(
                    partition=entry.partition,
                    base_sequence=entry.base_sequence,
                    messages=[p.message for p in entry.pending],
                )
                for entry in group
            ],
        )
        try:
            answer = self._client.call("TopicService", "Produce", request, address=address)
        except FerryError as error:
            unreachable = not error.reason and error.code == grpc.StatusCode.UNAVAILABLE
            if (error.retriable or unreachable) and time.monotonic() < deadline:
                return group, False
            for entry in group:
                for pending in entry.pending:
                    pending.future.set_exception(error)
            return [], True
        again = []
        failed = False
        for entry, result in zip(group, answer.partition_message_batches):
            if result.HasField("error") and result.error.code:
                error = FerryError.from_detail(result.error)
                if error.retriable and time.monotonic() < deadline:
                    again.append(entry)
                    continue
                failed = True
                for pending in entry.pending:
                    pending.future.set_exception(error)
                continue
            for index, pending in enumerate(entry.pending):
                pending.future.set_result(
                    RecordMetadata(self._topic, entry.partition, result.base_offset + index)
                )
        return again, failed
