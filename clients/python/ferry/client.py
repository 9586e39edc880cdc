"""The connection to a Ferry broker or cluster: channels per host, leader routing
that follows NOT_LEADER hints and metadata, retries of retriable errors, and the
admin calls."""

import itertools
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import grpc

from ferry.errors import FerryError
from ferry.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    group_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
    queue_pb2,
    queue_pb2_grpc,
    topic_pb2_grpc,
)

# A route: ("topic", name, partition) or ("queue", name, 0).
Route = Tuple[str, str, int]

_STUBS = {
    "AdminService": admin_pb2_grpc.AdminServiceStub,
    "TopicService": topic_pb2_grpc.TopicServiceStub,
    "GroupService": group_pb2_grpc.GroupServiceStub,
    "QueueService": queue_pb2_grpc.QueueServiceStub,
    "MetadataService": metadata_pb2_grpc.MetadataServiceStub,
}

_DURABILITY = {
    "fsync": common_pb2.DURABILITY_FSYNC,
    "interval": common_pb2.DURABILITY_INTERVAL,
    "none": common_pb2.DURABILITY_NONE,
}


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class Client:
    """A client of one Ferry deployment: a standalone broker, a cluster's hosts, or
    a gateway. `servers` are host:port addresses to start from (a list or a
    comma-separated string); `ca` (and `cert`, `key` for mutual TLS) turn TLS on;
    `token` is sent as a bearer token. Calls that fail retriably (NOT_LEADER, a host
    that went away, …) are sent again, to the leader when one is named, for up to
    `retry_deadline` seconds."""

    def __init__(
        self,
        servers: Union[str, Sequence[str]],
        *,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 10.0,
        retry_deadline: float = 30.0,
    ):
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one server address is needed")
        self._servers = list(servers)
        self._next_server = itertools.cycle(range(len(self._servers)))
        self._server = self._servers[0]
        self._credentials = None
        if ca:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca),
                private_key=_read(key) if key else None,
                certificate_chain=_read(cert) if cert else None,
            )
        self._call_metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self._lock = threading.Lock()
        self._channels: Dict[str, grpc.Channel] = {}
        self._leaders: Dict[Route, str] = {}
        self._partitions: Dict[str, int] = {}

    def close(self) -> None:
        """Closes every channel."""
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    # Channels and routing.

    def _channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
                if self._credentials is not None:
                    channel = grpc.secure_channel(address, self._credentials, options)
                else:
                    channel = grpc.insecure_channel(address, options)
                self._channels[address] = channel
            return channel

    def leader(self, route: Route) -> Optional[str]:
        """The address the client sends `route`'s requests to, if it knows one."""
        with self._lock:
            return self._leaders.get(route)

    def learn_leader(self, route: Optional[Route], address: str) -> None:
        """Sends `route`'s requests to `address` from now on (a NOT_LEADER hint)."""
        if route is not None:
            with self._lock:
                self._leaders[route] = address

    def _forget(self, route: Optional[Route]) -> None:
        if route is not None:
            with self._lock:
                self._leaders.pop(route, None)

    def _rotate(self) -> None:
        with self._lock:
            self._server = self._servers[next(self._next_server)]

    def call(
        self,
        service: str,
        method: str,
        request,
        route: Optional[Route] = None,
        address: Optional[str] = None,
        timeout: Optional[float] = None,
    ):
        """Calls `service`/`method`. With `address`, once, there: the caller
        regroups and retries (producer, consumer). Otherwise at `route`'s leader, or
        a server, following NOT_LEADER and retrying retriable failures until the
        retry deadline. Raises FerryError."""
        deadline = time.monotonic() + self.retry_deadline
        while True:
            target = address or (self.leader(route) if route else None) or self._server
            stub = _STUBS[service](self._channel(target))
            try:
                return getattr(stub, method)(
                    request,
                    timeout=timeout or self.timeout,
                    metadata=self._call_metadata,
                )
            except grpc.RpcError as rpc_error:
                error = FerryError.from_rpc_error(rpc_error)
            unreachable = not error.reason and error.code == grpc.StatusCode.UNAVAILABLE
            if unreachable and target == self._server:
                self._rotate()
            if address is not None:
                raise error
            if error.reason == "NOT_LEADER" and error.leader_address and route:
                self.learn_leader(route, error.leader_address)
            elif error.reason == "NOT_LEADER" and route is None:
                # Only the caller knows where the request belongs.
                raise error
            elif error.reason == "NOT_LEADER" or unreachable:
                # Nobody named, or the host is gone: ask the cluster again.
                self._forget(route)
                if route is not None:
                    self._refresh_quietly(route)
            if not (error.retriable or unreachable) or time.monotonic() >= deadline:
                raise error
            time.sleep(min(max(error.retry_after, 0.05), 1.0))

    # Metadata.

    def refresh(self, topics: Sequence[str] = ()) -> metadata_pb2.GetMetadataResponse:
        """Reads who leads what (for `topics`, or all) and remembers it."""
        answer = None
        for _ in range(len(self._servers)):
            try:
                answer = _STUBS["MetadataService"](self._channel(self._server)).GetMetadata(
                    metadata_pb2.GetMetadataRequest(topics=list(topics)),
                    timeout=self.timeout,
                    metadata=self._call_metadata,
                )
                break
            except grpc.RpcError as rpc_error:
                error = FerryError.from_rpc_error(rpc_error)
                if error.reason or error.code != grpc.StatusCode.UNAVAILABLE:
                    raise error
                self._rotate()
        if answer is None:
            raise FerryError(grpc.StatusCode.UNAVAILABLE, f"no server of {self._servers} answered")
        standalone = answer.cluster == "standalone"
        hosts = {host.host_id: host.address for host in answer.hosts if host.alive}
        with self._lock:
            for kind, entries in (("topic", answer.topics), ("queue", answer.queues)):
                for entry in entries:
                    if kind == "topic":
                        self._partitions[entry.name] = len(entry.partitions)
                    for partition in entry.partitions:
                        route = (kind, entry.name, partition.partition)
                        address = hosts.get(partition.leader_host_id)
                        if standalone:
                            self._leaders.pop(route, None)
                        elif address:
                            self._leaders[route] = address
                        else:
                            self._leaders.pop(route, None)
        return answer

    def _refresh_quietly(self, route: Route) -> None:
        try:
            self.refresh([route[1]] if route[0] == "topic" else [])
        except FerryError:
            pass

    def partitions(self, topic: str) -> int:
        """The topic's partition count (read from the cluster once, then remembered)."""
        with self._lock:
            count = self._partitions.get(topic)
        if count:
            return count
        deadline = time.monotonic() + self.retry_deadline
        while True:
            self.refresh([topic])
            with self._lock:
                count = self._partitions.get(topic)
            if count:
                return count
            if time.monotonic() >= deadline:
                raise FerryError(grpc.StatusCode.NOT_FOUND, f"topic {topic!r} not found",
                                 "TOPIC_NOT_FOUND", {"topic": topic})
            time.sleep(0.1)

    # Admin.

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 0,
        durability: str = "",
        retention_ms: Optional[int] = None,
    ) -> admin_pb2.TopicInfo:
        """Creates a topic (replication factor 0: the broker's default)."""
        config = admin_pb2.TopicConfig(
            partitions=partitions,
            replication_factor=replication_factor,
            durability=_DURABILITY.get(durability, common_pb2.DURABILITY_UNSPECIFIED),
        )
        if retention_ms is not None:
            config.retention_ms = retention_ms
        answer = self.call("AdminService", "CreateTopic",
                           admin_pb2.CreateTopicRequest(name=name, config=config))
        return answer.topic

    def delete_topic(self, name: str) -> None:
        """Deletes a topic and its data."""
        self.call("AdminService", "DeleteTopic", admin_pb2.DeleteTopicRequest(name=name))
        with self._lock:
            self._partitions.pop(name, None)

    def create_queue(self, name: str, **config) -> queue_pb2.QueueInfo:
        """Creates a queue; `config` holds QueueConfig fields (visibility_timeout_ms,
        max_receive_count, dead_letter_queue, replication_factor, …)."""
        answer = self.call("QueueService", "CreateQueue", queue_pb2.CreateQueueRequest(
            name=name, config=queue_pb2.QueueConfig(**config)))
        return answer.queue

    def delete_queue(self, name: str) -> None:
        """Deletes a queue and its messages."""
        self.call("QueueService", "DeleteQueue", queue_pb2.DeleteQueueRequest(name=name))

    def producer(self, topic: str, **options) -> "Producer":
        """A batching producer to `topic` (see ferry.Producer)."""
        from ferry.producer import Producer

        return Producer(self, topic, **options)

    def consumer(self, group: str, topics: List[str], **options) -> "Consumer":
        """A consumer-group member reading `topics` (see ferry.Consumer)."""
        from ferry.consumer import Consumer

        return Consumer(self, group, topics, **options)

    def queue(self, name: str) -> "Queue":
        """A handle on queue `name` (see ferry.Queue)."""
        from ferry.queue import Queue

        return Queue(self, name)
