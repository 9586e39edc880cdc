"""A Python grpcio client against Ferry's gRPC API over TLS.

Generates the stubs from the repository's protos with grpcio-tools' protoc, then
sends three messages to a queue, receives and acks them. With a client certificate
(mutual TLS) it creates the queue first and checks that a client without a
certificate is refused. With a bearer token (gRPC access-token call credentials) it
asks WhoAmI, and checks that a second token, without rights on the queue, gets
PERMISSION_DENIED naming the right, and no token UNAUTHENTICATED. Errors are read
with grpcio-status as the standard google.rpc.Status: an ErrorInfo of domain
ferry.dev whose reason is Ferry's error code, and a ResourceInfo naming a missing
queue. Prints one line per step; exits non-zero on any failure. Run by
broker/tests/tls.rs and broker/tests/auth.rs against a real broker.
"""

import argparse
import glob
import os
import sys
import tempfile
import time

import grpc
import grpc_tools
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpc_tools import protoc


def generate(proto_dir: str, out: str) -> None:
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(glob.glob(os.path.join(proto_dir, "ferry", "v1", "*.proto")))
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}",
         f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)


def standard_details(error: grpc.RpcError, expected_reason: str):
    """The ErrorInfo (checked against `expected_reason`) and the ResourceInfo, if
    any, of a failed call, decoded as any gRPC client decodes them."""
    status = rpc_status.from_call(error)
    if status is None:
        sys.exit(f"{error.code().name}: no google.rpc.Status in the trailers")
    info, resource = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            resource = error_details_pb2.ResourceInfo()
            detail.Unpack(resource)
    if info is None or info.domain != "ferry.dev" or info.reason != expected_reason:
        sys.exit(f"{error.code().name}: expected reason {expected_reason}, got {info}")
    return info, resource


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port of the broker")
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--token", help="bearer token with rights on the queue")
    parser.add_argument("--denied-token", help="bearer token without them")
    parser.add_argument("--queue", default="from-python")
    args = parser.parse_args()

    # Removed when the script ends (its finalizer runs at exit, failures included).
    stubs = tempfile.TemporaryDirectory(prefix="ferry-python-")
    generate(args.proto_dir, stubs.name)
    from ferry.v1 import access_pb2, access_pb2_grpc  # generated just above
    from ferry.v1 import queue_pb2, queue_pb2_grpc

    server_only = grpc.ssl_channel_credentials(root_certificates=read(args.ca))
    if args.token:
        credentials = grpc.composite_channel_credentials(
            server_only, grpc.access_token_call_credentials(args.token)
        )
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.key),
            certificate_chain=read(args.cert),
        )
    with grpc.secure_channel(args.server, credentials) as channel:
        queues = queue_pb2_grpc.QueueServiceStub(channel)
        if args.token:
            me = access_pb2_grpc.AccessServiceStub(channel).WhoAmI(
                access_pb2.WhoAmIRequest(), timeout=10
            )
            print("whoami", me.principal, me.method)
        else:
            queues.CreateQueue(queue_pb2.CreateQueueRequest(name=args.queue), timeout=10)
            print("created", args.queue)
        bodies = [f"hello-{n}".encode() for n in range(3)]
        sent = queues.Send(
            queue_pb2.SendRequest(
                queue=args.queue,
                messages=[queue_pb2.SendMessage(body=body) for body in bodies],
            ),
            timeout=10,
        )
        print("sent", len(sent.results))
        received = []
        deadline = time.monotonic() + 20
        while len(received) < len(bodies) and time.monotonic() < deadline:
            answer = queues.Receive(
                queue_pb2.ReceiveRequest(queue=args.queue, max_messages=10, wait_ms=1000),
                timeout=10,
            )
            received.extend(answer.messages)
        got = sorted(message.body for message in received)
        if got != sorted(bodies):
            sys.exit(f"received {got}, expected {sorted(bodies)}")
        acked = queues.Ack(
            queue_pb2.AckRequest(
                queue=args.queue, receipts=[message.receipt for message in received]
            ),
            timeout=10,
        )
        failed = [result for result in acked.results if result.HasField("error")]
        if failed:
            sys.exit(f"acks failed: {failed}")
        print("acked", len(acked.results))
        if not args.token:
            try:
                queues.Receive(queue_pb2.ReceiveRequest(queue="no-such-queue"), timeout=10)
            except grpc.RpcError as error:
                _, resource = standard_details(error, "QUEUE_NOT_FOUND")
                if resource is None or (resource.resource_type, resource.resource_name) != (
                    "queue",
                    "no-such-queue",
                ):
                    sys.exit(f"a missing queue is not named: {resource}")
                print("missing", error.code().name, resource.resource_type, resource.resource_name)
            else:
                sys.exit("a receive from a missing queue succeeded")

    if args.token:
        check_refusals(args, server_only, queue_pb2, queue_pb2_grpc)
        return

    # Without a client certificate the broker refuses the connection.
    anonymous = grpc.ssl_channel_credentials(root_certificates=read(args.ca))
    with grpc.secure_channel(args.server, anonymous) as channel:
        try:
            queue_pb2_grpc.QueueServiceStub(channel).ListQueues(
                queue_pb2.ListQueuesRequest(), timeout=10
            )
        except grpc.RpcError as error:
            print("refused without a certificate:", error.code().name)
        else:
            sys.exit("a client without a certificate was served")


def check_refusals(args, server_only, queue_pb2, queue_pb2_grpc) -> None:
    """A token without rights is denied, naming the right; no token is refused."""
    denied = grpc.composite_channel_credentials(
        server_only, grpc.access_token_call_credentials(args.denied_token)
    )
    request = queue_pb2.SendRequest(
        queue=args.queue, messages=[queue_pb2.SendMessage(body=b"denied")]
    )
    for name, credentials, expected in [
        ("denied", denied, grpc.StatusCode.PERMISSION_DENIED),
        ("anonymous", server_only, grpc.StatusCode.UNAUTHENTICATED),
    ]:
        with grpc.secure_channel(args.server, credentials) as channel:
            try:
                queue_pb2_grpc.QueueServiceStub(channel).Send(request, timeout=10)
            except grpc.RpcError as error:
                if error.code() != expected:
                    sys.exit(f"{name}: {error.code()} {error.details()}, expected {expected}")
                info, _ = standard_details(error, expected.name)
                if name == "denied" and info.metadata.get("operation") != "send":
                    sys.exit(f"denied: the missing right is not named: {info}")
                print(name, error.code().name, error.details(), f"(reason {info.reason})")
            else:
                sys.exit(f"{name}: a send without rights was accepted")


if __name__ == "__main__":
    main()
