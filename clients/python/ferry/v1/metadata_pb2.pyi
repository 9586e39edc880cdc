from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeClusterRequest(_message.Message):
    __slots__ = ("topics", "cluster")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    cluster: str
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., cluster: _Optional[str] = ...) -> None: ...

class DescribeClusterResponse(_message.Message):
    __slots__ = ("cluster", "hosts", "topics", "queues")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    topics: _containers.RepeatedCompositeFieldContainer[TopicMetadata]
    queues: _containers.RepeatedCompositeFieldContainer[TopicMetadata]
    def __init__(self, cluster: _Optional[str] = ..., hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicMetadata, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[TopicMetadata, _Mapping]]] = ...) -> None: ...

class GetMetadataRequest(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topics: _Optional[_Iterable[str]] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("host_id", "address", "alive", "controller", "zone", "draining")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    address: str
    alive: bool
    controller: bool
    zone: str
    draining: bool
    def __init__(self, host_id: _Optional[str] = ..., address: _Optional[str] = ..., alive: _Optional[bool] = ..., controller: _Optional[bool] = ..., zone: _Optional[str] = ..., draining: _Optional[bool] = ...) -> None: ...

class PartitionLeader(_message.Message):
    __slots__ = ("partition", "leader_host_id", "leader_epoch", "replicas", "in_sync_replicas", "high_watermark", "log_end_offset", "follower_lag")
    class FollowerLagEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LEADER_HOST_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOG_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOWER_LAG_FIELD_NUMBER: _ClassVar[int]
    partition: int
    leader_host_id: str
    leader_epoch: int
    replicas: _containers.RepeatedScalarFieldContainer[str]
    in_sync_replicas: _containers.RepeatedScalarFieldContainer[str]
    high_watermark: int
    log_end_offset: int
    follower_lag: _containers.ScalarMap[str, int]
    def __init__(self, partition: _Optional[int] = ..., leader_host_id: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., replicas: _Optional[_Iterable[str]] = ..., in_sync_replicas: _Optional[_Iterable[str]] = ..., high_watermark: _Optional[int] = ..., log_end_offset: _Optional[int] = ..., follower_lag: _Optional[_Mapping[str, int]] = ...) -> None: ...

class TopicMetadata(_message.Message):
    __slots__ = ("name", "partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionLeader]
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[PartitionLeader, _Mapping]]] = ...) -> None: ...

class GetMetadataResponse(_message.Message):
    __slots__ = ("cluster", "hosts", "topics", "queues")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    cluster: str
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    topics: _containers.RepeatedCompositeFieldContainer[TopicMetadata]
    queues: _containers.RepeatedCompositeFieldContainer[TopicMetadata]
    def __init__(self, cluster: _Optional[str] = ..., hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., topics: _Optional[_Iterable[_Union[TopicMetadata, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[TopicMetadata, _Mapping]]] = ...) -> None: ...
