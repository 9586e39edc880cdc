"""A consumer-group member: the coordinator assigns partitions (moving one only
after its previous owner released it), the member reads decoded messages from each
partition's leader, and commits the offsets it has handed out."""

import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import grpc

from ferry.client import Client
from ferry.errors import FerryError
from ferry.v1 import common_pb2, group_pb2, topic_pb2

Partition = Tuple[str, int]


class Record(NamedTuple):
    """A consumed message."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    headers: Dict[str, bytes]
    timestamp_ms: int


class Consumer:
    """Joins `group` for `topics`. `poll` returns the next messages of the assigned
    partitions; `commit` stores how far they were handed out (also done on every
    reassignment and on `close`, which leaves the group). Where a partition has no
    committed offset, reading starts at its earliest (`reset="earliest"`) or latest
    offset."""

    def __init__(
        self,
        client: Client,
        group: str,
        topics: Sequence[str],
        *,
        session_timeout_ms: int = 10_000,
        reset: str = "earliest",
        client_id: str = "ferry-python",
        max_wait_ms: int = 500,
    ):
        if reset not in ("earliest", "latest"):
            raise ValueError("reset is 'earliest' or 'latest'")
        self._client = client
        self._group = group
        self._topics = list(topics)
        self._session_timeout_ms = session_timeout_ms
        self._reset = reset
        self._client_id = client_id
        self._max_wait_ms = max_wait_ms
        self._member_id = ""
        self._interval = 1.0
        self._next_heartbeat = 0.0
        self._positions: Dict[Partition, int] = {}
        self._committed: Dict[Partition, int] = {}
        self._join()

    @property
    def assignment(self) -> List[Partition]:
        """The partitions this member reads now."""
        return sorted(self._positions)

    def _join(self) -> None:
        answer = self._client.call("GroupService", "JoinGroup", group_pb2.JoinGroupRequest(
            group=self._group,
            topics=self._topics,
            session_timeout_ms=self._session_timeout_ms,
            client_id=self._client_id,
        ))
        self._member_id = answer.member_id
        self._interval = max(answer.heartbeat_interval_ms, 100) / 1000.0
        self._next_heartbeat = time.monotonic() + self._interval
        self._positions, self._committed = {}, {}
        self._assign([(tp.topic, tp.partition) for tp in answer.assigned])

    def _assign(self, assigned: List[Partition]) -> None:
        """Takes the partitions newly assigned and gives up the others (committing
        them first)."""
        kept = set(assigned)
        released = [tp for tp in self._positions if tp not in kept]
        if released:
            self.commit(released)
            for tp in released:
                self._positions.pop(tp, None)
                self._committed.pop(tp, None)
        new = [tp for tp in assigned if tp not in self._positions]
        if not new:
            return
        answer = self._client.call("GroupService", "FetchOffsets", group_pb2.FetchOffsetsRequest(
            group=self._group,
            partitions=[common_pb2.TopicPartition(topic=t, partition=p) for t, p in new],
        ))
        stored = {(o.topic, o.partition): o.offset for o in answer.offsets}
        for tp in new:
            if tp in stored:
                self._positions[tp] = stored[tp]
                self._committed[tp] = stored[tp]
            else:
                self._positions[tp] = self._reset_offset(tp)

    def _reset_offset(self, tp: Partition) -> int:
        topic, partition = tp
        query = topic_pb2.OffsetQuery(partition=partition)
        if self._reset == "earliest":
            query.earliest = True
        else:
            query.latest = True
        answer = self._client.call(
            "TopicService", "ListOffsets",
            topic_pb2.ListOffsetsRequest(topic=topic, queries=[query]),
            route=("topic", topic, partition),
        )
        return answer.offsets[0].offset

    def _heartbeat(self) -> None:
        if time.monotonic() < self._next_heartbeat:
            return
        owned = [common_pb2.TopicPartition(topic=t, partition=p) for t, p in self._positions]
        try:
            answer = self._client.call("GroupService", "Heartbeat", group_pb2.HeartbeatRequest(
                group=self._group, member_id=self._member_id, owned=owned))
        except FerryError as error:
            if error.reason == "UNKNOWN_MEMBER":
                # The session ran out: join again (uncommitted progress is re-read).
                self._join()
                return
            raise
        self._interval = max(answer.heartbeat_interval_ms, 100) / 1000.0
        self._next_heartbeat = time.monotonic() + self._interval
        self._assign([(tp.topic, tp.partition) for tp in answer.assigned])

    def poll(self, timeout: float = 1.0) -> List[Record]:
        """The next messages of the assigned partitions, waiting up to `timeout`
        seconds for some."""
        end = time.monotonic() + timeout
        while True:
            self._heartbeat()
            records = self._fetch(max(0.0, min(end - time.monotonic(), self._interval)))
            if records or time.monotonic() >= end:
                return records

    def _fetch(self, wait: float) -> List[Record]:
        if not self._positions:
            time.sleep(wait)
            return []
        by_host: Dict[Optional[str], List[Partition]] = {}
        for tp in sorted(self._positions):
            by_host.setdefault(self._client.leader(("topic",) + tp), []).append(tp)
        records: List[Record] = []
        wait_ms = int(min(wait * 1000, self._max_wait_ms))
        for address, partitions in by_host.items():
            request = topic_pb2.FetchRequest(
                partitions=[
                    topic_pb2.FetchPartition(topic=t, partition=p, offset=self._positions[(t, p)])
                    for t, p in partitions
                ],
                max_wait_ms=wait_ms // max(1, len(by_host)),
                decode=True,
            )
            try:
                answer = self._client.call("TopicService", "Fetch", request, address=address)
            except FerryError as error:
                unreachable = not error.reason and error.code == grpc.StatusCode.UNAVAILABLE
                if not (error.retriable or unreachable):
                    raise
                try:
                    self._client.refresh(self._topics)
                except FerryError:
                    pass  # tried again at the next poll
                continue
            for fetched in answer.partitions:
                records.extend(self._take(fetched))
        return records

    def _take(self, fetched: topic_pb2.FetchedPartition) -> List[Record]:
        tp = (fetched.topic, fetched.partition)
        if tp not in self._positions:
            return []
        if fetched.HasField("error") and fetched.error.code:
            error = FerryError.from_detail(fetched.error)
            if error.reason == "NOT_LEADER":
                if error.leader_address:
                    self._client.learn_leader(("topic",) + tp, error.leader_address)
                else:
                    self._client.refresh([fetched.topic])
            elif error.reason == "OFFSET_OUT_OF_RANGE":
                self._positions[tp] = self._reset_offset(tp)
            elif not error.retriable:
                raise error
            return []
        self._positions[tp] = max(self._positions[tp], fetched.next_offset)
        return [
            Record(
                fetched.topic,
                fetched.partition,
                m.offset,
                m.key if m.HasField("key") else None,
                m.value,
                {h.key: h.value for h in m.headers},
                m.timestamp_ms,
            )
            for m in fetched.messages
        ]

    def commit(self, partitions: Optional[Sequence[Partition]] = None) -> None:
        """Commits the positions of `partitions` (default: all assigned) reached by
        what `poll` handed out."""
        chosen = list(partitions) if partitions is not None else list(self._positions)
        offsets = [
            group_pb2.OffsetCommit(topic=t, partition=p, offset=self._positions[(t, p)])
            for t, p in chosen
            if (t, p) in self._positions and self._committed.get((t, p)) != self._positions[(t, p)]
        ]
        if not offsets:
            return
        self._client.call("GroupService", "CommitOffsets", group_pb2.CommitOffsetsRequest(
            group=self._group, member_id=self._member_id, offsets=offsets))
        for offset in offsets:
            self._committed[(offset.topic, offset.partition)] = offset.offset

    def close(self) -> None:
        """Commits and leaves the group, so its partitions move at once."""
        try:
            self.commit()
        finally:
            self._client.call("GroupService", "LeaveGroup", group_pb2.LeaveGroupRequest(
                group=self._group, member_id=self._member_id))

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *_) -> None:
        self.close()
