from ferry.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReceiveMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECEIVE_MODE_UNSPECIFIED: _ClassVar[ReceiveMode]
    RECEIVE_MODE_AT_LEAST_ONCE: _ClassVar[ReceiveMode]
    RECEIVE_MODE_AT_MOST_ONCE: _ClassVar[ReceiveMode]
RECEIVE_MODE_UNSPECIFIED: ReceiveMode
RECEIVE_MODE_AT_LEAST_ONCE: ReceiveMode
RECEIVE_MODE_AT_MOST_ONCE: ReceiveMode

class QueueConfig(_message.Message):
    __slots__ = ("fifo", "durability", "flush_interval_ms", "visibility_timeout_ms", "delay_ms", "receive_wait_ms", "retention_ms", "max_message_bytes", "max_receive_count", "dead_letter_queue", "dedup_window_ms", "content_based_dedup", "max_messages", "replication_factor", "replication")
    FIFO_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    FLUSH_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_QUEUE_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_BASED_DEDUP_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FIELD_NUMBER: _ClassVar[int]
    fifo: bool
    durability: _common_pb2.Durability
    flush_interval_ms: int
    visibility_timeout_ms: int
    delay_ms: int
    receive_wait_ms: int
    retention_ms: int
    max_message_bytes: int
    max_receive_count: int
    dead_letter_queue: str
    dedup_window_ms: int
    content_based_dedup: bool
    max_messages: int
    replication_factor: int
    replication: _common_pb2.ReplicationMode
    def __init__(self, fifo: _Optional[bool] = ..., durability: _Optional[_Union[_common_pb2.Durability, str]] = ..., flush_interval_ms: _Optional[int] = ..., visibility_timeout_ms: _Optional[int] = ..., delay_ms: _Optional[int] = ..., receive_wait_ms: _Optional[int] = ..., retention_ms: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_receive_count: _Optional[int] = ..., dead_letter_queue: _Optional[str] = ..., dedup_window_ms: _Optional[int] = ..., content_based_dedup: _Optional[bool] = ..., max_messages: _Optional[int] = ..., replication_factor: _Optional[int] = ..., replication: _Optional[_Union[_common_pb2.ReplicationMode, str]] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("name", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: QueueConfig
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[QueueConfig, _Mapping]] = ...) -> None: ...

class CreateQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueInfo
    def __init__(self, queue: _Optional[_Union[QueueInfo, _Mapping]] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PurgeQueueResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueInfo]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueInfo, _Mapping]]] = ...) -> None: ...

class DescribeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: QueueInfo
    def __init__(self, queue: _Optional[_Union[QueueInfo, _Mapping]] = ...) -> None: ...

class QueueInfo(_message.Message):
    __slots__ = ("name", "config", "stats", "created_at_ms", "dead_letter_sources")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_SOURCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: QueueConfig
    stats: QueueStats
    created_at_ms: int
    dead_letter_sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[QueueConfig, _Mapping]] = ..., stats: _Optional[_Union[QueueStats, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., dead_letter_sources: _Optional[_Iterable[str]] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("visible", "in_flight", "delayed", "oldest_age_ms", "consumers", "sent", "received", "acked", "redelivered", "dead_lettered", "expired", "deduplicated")
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    visible: int
    in_flight: int
    delayed: int
    oldest_age_ms: int
    consumers: int
    sent: int
    received: int
    acked: int
    redelivered: int
    dead_lettered: int
    expired: int
    deduplicated: int
    def __init__(self, visible: _Optional[int] = ..., in_flight: _Optional[int] = ..., delayed: _Optional[int] = ..., oldest_age_ms: _Optional[int] = ..., consumers: _Optional[int] = ..., sent: _Optional[int] = ..., received: _Optional[int] = ..., acked: _Optional[int] = ..., redelivered: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., expired: _Optional[int] = ..., deduplicated: _Optional[int] = ...) -> None: ...

class SendMessage(_message.Message):
    __slots__ = ("body", "attributes", "delay_ms", "group_id", "dedup_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    attributes: _containers.ScalarMap[str, str]
    delay_ms: int
    group_id: str
    dedup_id: str
    def __init__(self, body: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., delay_ms: _Optional[int] = ..., group_id: _Optional[str] = ..., dedup_id: _Optional[str] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("queue", "messages")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    queue: str
    messages: _containers.RepeatedCompositeFieldContainer[SendMessage]
    def __init__(self, queue: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[SendMessage, _Mapping]]] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("message_id", "duplicate")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    duplicate: bool
    def __init__(self, message_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SendResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ...) -> None: ...

class ReceiveRequest(_message.Message):
    __slots__ = ("queue", "max_messages", "wait_ms", "visibility_timeout_ms", "mode", "consumer_id")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    queue: str
    max_messages: int
    wait_ms: int
    visibility_timeout_ms: int
    mode: ReceiveMode
    consumer_id: str
    def __init__(self, queue: _Optional[str] = ..., max_messages: _Optional[int] = ..., wait_ms: _Optional[int] = ..., visibility_timeout_ms: _Optional[int] = ..., mode: _Optional[_Union[ReceiveMode, str]] = ..., consumer_id: _Optional[str] = ...) -> None: ...

class DeadLetterOrigin(_message.Message):
    __slots__ = ("source_queue", "source_message_id", "reason", "receive_count", "dead_lettered_at_ms")
    SOURCE_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    source_queue: str
    source_message_id: str
    reason: str
    receive_count: int
    dead_lettered_at_ms: int
    def __init__(self, source_queue: _Optional[str] = ..., source_message_id: _Optional[str] = ..., reason: _Optional[str] = ..., receive_count: _Optional[int] = ..., dead_lettered_at_ms: _Optional[int] = ...) -> None: ...

class ReceivedMessage(_message.Message):
    __slots__ = ("message_id", "receipt", "body", "attributes", "receive_count", "sent_at_ms", "group_id", "dedup_id", "dead_letter")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    DEDUP_ID_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    receipt: str
    body: bytes
    attributes: _containers.ScalarMap[str, str]
    receive_count: int
    sent_at_ms: int
    group_id: str
    dedup_id: str
    dead_letter: DeadLetterOrigin
    def __init__(self, message_id: _Optional[str] = ..., receipt: _Optional[str] = ..., body: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., receive_count: _Optional[int] = ..., sent_at_ms: _Optional[int] = ..., group_id: _Optional[str] = ..., dedup_id: _Optional[str] = ..., dead_letter: _Optional[_Union[DeadLetterOrigin, _Mapping]] = ...) -> None: ...

class ReceiveResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ReceivedMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ReceivedMessage, _Mapping]]] = ...) -> None: ...

class ReceiptResult(_message.Message):
    __slots__ = ("receipt", "error")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    receipt: str
    error: _common_pb2.ErrorDetail
    def __init__(self, receipt: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("queue", "receipts")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    receipts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, queue: _Optional[str] = ..., receipts: _Optional[_Iterable[str]] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReceiptResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReceiptResult, _Mapping]]] = ...) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("queue", "receipts", "delay_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    receipts: _containers.RepeatedScalarFieldContainer[str]
    delay_ms: int
    def __init__(self, queue: _Optional[str] = ..., receipts: _Optional[_Iterable[str]] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class NackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReceiptResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReceiptResult, _Mapping]]] = ...) -> None: ...

class ChangeVisibilityRequest(_message.Message):
    __slots__ = ("queue", "receipts", "visibility_timeout_ms")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    queue: str
    receipts: _containers.RepeatedScalarFieldContainer[str]
    visibility_timeout_ms: int
    def __init__(self, queue: _Optional[str] = ..., receipts: _Optional[_Iterable[str]] = ..., visibility_timeout_ms: _Optional[int] = ...) -> None: ...

class ChangeVisibilityResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReceiptResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReceiptResult, _Mapping]]] = ...) -> None: ...

class RedriveRequest(_message.Message):
    __slots__ = ("queue", "to_queue", "max_messages")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TO_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    queue: str
    to_queue: str
    max_messages: int
    def __init__(self, queue: _Optional[str] = ..., to_queue: _Optional[str] = ..., max_messages: _Optional[int] = ...) -> None: ...

class RedriveResponse(_message.Message):
    __slots__ = ("moved",)
    MOVED_FIELD_NUMBER: _ClassVar[int]
    moved: int
    def __init__(self, moved: _Optional[int] = ...) -> None: ...
