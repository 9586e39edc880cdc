"""Unit tests of the Python client that need no broker:

    PYTHONPATH=clients/python:~/.cache/ferry/python python3 -m unittest discover clients/python/tests
"""

import unittest

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from ferry import FerryError, partition_for_key
from ferry.crc32c import crc32c
from ferry.v1 import common_pb2


class FakeRpcError(grpc.RpcError):
    """What grpcio raises, with a google.rpc.Status in the trailers."""

    def __init__(self, code, message, details):
        self._code, self._message = code, message
        status = status_pb2.Status(code=code.value[0], message=message, details=details)
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self):
        return self._code

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._trailers


def packed(message, type_url=None):
    any_message = any_pb2.Any()
    any_message.Pack(message)
    if type_url:
        any_message.type_url = type_url
    return any_message


class PartitioningTest(unittest.TestCase):
    def test_crc32c_matches_the_standard_check_value(self):
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)

    def test_keys_map_to_partitions_as_the_broker_maps_them(self):
        # CRC32C("user-1") = 0x1C3A4A0B in the Rust client's tests' terms: modulo 3.
        self.assertEqual(partition_for_key(b"user-1", 3), crc32c(b"user-1") % 3)
        self.assertEqual(partition_for_key(b"anything", 0), 0)


class ErrorTest(unittest.TestCase):
    def test_not_leader_carries_the_reason_retry_and_leader(self):
        hint = common_pb2.LeaderHint(topic="t", partition=1, host_id="h2", address="10.0.0.2:7070")
        error = FerryError.from_rpc_error(FakeRpcError(
            grpc.StatusCode.UNAVAILABLE,
            "not the leader",
            [
                packed(error_details_pb2.ErrorInfo(reason="NOT_LEADER", domain="ferry.dev",
                                                   metadata={"topic": "t", "partition": "1"})),
                packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=100_000_000))),
                packed(hint, "type.googleapis.com/ferry.v1.LeaderHint"),
            ],
        ))
        self.assertEqual(error.reason, "NOT_LEADER")
        self.assertEqual(error.metadata["partition"], "1")
        self.assertAlmostEqual(error.retry_after, 0.1)
        self.assertEqual(error.leader_address, "10.0.0.2:7070")
        self.assertTrue(error.retriable)

    def test_another_domain_is_not_a_ferry_reason(self):
        error = FerryError.from_rpc_error(FakeRpcError(
            grpc.StatusCode.NOT_FOUND, "no",
            [packed(error_details_pb2.ErrorInfo(reason="NOT_FOUND", domain="example.com"))],
        ))
        self.assertEqual(error.reason, "")
        self.assertFalse(error.retriable)

    def test_inline_details_decode_too(self):
        error = FerryError.from_detail(common_pb2.ErrorDetail(
            code=common_pb2.ERROR_CODE_OFFSET_OUT_OF_RANGE, message="past the end"))
        self.assertEqual(error.reason, "OFFSET_OUT_OF_RANGE")
        self.assertFalse(error.retriable)


if __name__ == "__main__":
    unittest.main()
