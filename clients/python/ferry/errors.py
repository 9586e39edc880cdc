"""Ferry's errors as Python exceptions, read from the standard gRPC error details
(google.rpc.Status with an ErrorInfo of domain ferry.dev; docs/api.md)."""

from typing import Dict, Optional

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ferry.v1 import common_pb2

DOMAIN = "ferry.dev"
LEADER_HINT_TYPE = "type.googleapis.com/ferry.v1.LeaderHint"

# Reasons a request may be sent again for (nothing was done, or it is idempotent).
RETRIABLE_REASONS = frozenset(
    {
        "NOT_LEADER",
        "SHUTTING_DOWN",
        "METADATA_UNAVAILABLE",
        "NOT_ENOUGH_REPLICAS",
        "STORAGE_FAILED",
        "THROTTLED",
        "DISK_FULL",
    }
)


class FerryError(Exception):
    """A failed call: the gRPC code, Ferry's stable reason (TOPIC_NOT_FOUND, …), what
    it is about (metadata), how long to wait before a retry, and for NOT_LEADER
    where the leader is."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Optional[Dict[str, str]] = None,
        retry_after: float = 0.0,
        leader_address: str = "",
    ):
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.leader_address = leader_address

    @property
    def retriable(self) -> bool:
        """Whether sending the request again may succeed."""
        if self.reason:
            return self.reason in RETRIABLE_REASONS
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "FerryError":
        """Decodes a grpcio error, with Ferry's details when the broker sent them."""
        reason, metadata, retry_after, leader = "", {}, 0.0, ""
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == DOMAIN:
                    reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                retry_after = info.retry_delay.ToTimedelta().total_seconds()
            elif detail.type_url == LEADER_HINT_TYPE:
                hint = common_pb2.LeaderHint()
                hint.ParseFromString(detail.value)
                leader = hint.address
        return cls(error.code(), error.details() or "", reason, metadata, retry_after, leader)

    @classmethod
    def from_detail(cls, detail: common_pb2.ErrorDetail) -> "FerryError":
        """Decodes the error one partition or message carries inside a reply."""
        name = common_pb2.ErrorCode.Name(detail.code) if detail.code else "ERROR_CODE_UNSPECIFIED"
        return cls(
            grpc.StatusCode.UNKNOWN,
            detail.message,
            name.removeprefix("ERROR_CODE_"),
            {},
            detail.retry_after_ms / 1000.0,
            detail.leader_hint.address if detail.HasField("leader_hint") else "",
        )
