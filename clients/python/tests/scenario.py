"""The Python client against a running Ferry, in two phases so a test can kill a
host in between (e2e/tests/python_client.rs; broker/tests/python_client.rs runs both
phases against a standalone broker):

  before: creates a topic and queues, produces 30 messages (keyed and keyless, over
          every partition), consumes them all as group "readers" and commits, sends
          5 messages to a queue, and moves a message to a dead-letter queue; loses
          the answer to a produce on purpose and checks the retry is stored once by
          the idempotent producer (and twice by a plain one).
  after:  produces 30 more; a new member of "readers" gets exactly those (the
          commit held); the 5 queued messages are received and acked.

With --pause, phase `all` stops after `before`, prints "paused", and goes on with
the same client once a line arrives on stdin (the test kills a leader meanwhile,
so the client's remembered leaders are stale). Prints one line per step; exits
non-zero on any failure.

    python3 scenario.py --servers HOST:PORT[,…] --phase before|after|all [--replicas N] [--pause]
"""

import argparse
import collections
import sys
import time

import grpc

from ferry import Client, FerryError, partition_for_key

TOPIC = "py-events"
QUEUE = "py-jobs"
POISON = "py-poison"
ONCE = "py-once"
PARTITIONS = 3


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"FAILED: {message}")


def produce(client: Client, prefix: str) -> None:
    keys = {}
    with client.producer(TOPIC, linger=0.01) as producer:
        futures = []
        for n in range(30):
            key = f"user-{n % 7}".encode() if n % 2 else None
            futures.append(producer.send(f"{prefix}-{n}".encode(), key=key, headers={"n": str(n).encode()}))
            keys[len(futures) - 1] = key
        stored = [future.result(timeout=60) for future in futures]
    for index, meta in enumerate(stored):
        key = keys[index]
        if key is not None:
            check(meta.partition == partition_for_key(key, PARTITIONS),
                  f"{key!r} stored on partition {meta.partition}")
    partitions = sorted({meta.partition for meta in stored})
    print(f"produced 30 {prefix} messages (keyed ones on their key's partition) to {partitions}")


def consume(client: Client, expected_prefix: str) -> None:
    values = []
    with client.consumer("readers", [TOPIC]) as consumer:
        deadline = time.monotonic() + 60
        while len(values) < 30 and time.monotonic() < deadline:
            for record in consumer.poll(timeout=1.0):
                check(record.headers.get("n") is not None, f"headers kept: {record}")
                values.append(record.value.decode())
        consumer.commit()
    expected = {f"{expected_prefix}-{n}" for n in range(30)}
    check(set(values) == expected, f"consumed {sorted(values)}, expected {sorted(expected)}")
    check(len(values) == 30, f"consumed {len(values)} messages, each once expected")
    print(f"consumed the 30 {expected_prefix} messages as group readers")


def produce_losing_an_answer(client: Client, prefix: str, idempotent: bool) -> None:
    """Produces 10 messages to ONCE in one request whose answer is lost after the
    broker stored them: the producer sends the same request again."""
    real_call = client.call
    lost = []

    def call(service, method, request, **options):
        answer = real_call(service, method, request, **options)
        if method == "Produce" and not lost:
            lost.append(answer)
            raise FerryError(grpc.StatusCode.UNAVAILABLE, "the answer was lost (test)")
        return answer

    client.call = call
    try:
        with client.producer(ONCE, linger=0.05, idempotent=idempotent) as producer:
            futures = [producer.send(f"{prefix}-{n}".encode()) for n in range(10)]
            stored = [future.result(timeout=60) for future in futures]
    finally:
        del client.call  # the class's own method again
    check(len(lost) == 1, "an answer was lost")
    offsets = [meta.offset for meta in stored]
    check(offsets == sorted(offsets) and len(set(offsets)) == 10, f"offsets {offsets}")


def once_after_a_lost_answer(client: Client, replicas: int) -> None:
    client.create_topic(ONCE, partitions=1, replication_factor=replicas)
    produce_losing_an_answer(client, "idempotent", idempotent=True)
    produce_losing_an_answer(client, "plain", idempotent=False)
    counts = collections.Counter()
    with client.consumer("once-readers", [ONCE]) as consumer:
        deadline = time.monotonic() + 60
        while sum(counts.values()) < 30 and time.monotonic() < deadline:
            for record in consumer.poll(timeout=1.0):
                counts[record.value.decode()] += 1
    idempotent = {value: n for value, n in counts.items() if value.startswith("idempotent-")}
    plain = {value: n for value, n in counts.items() if value.startswith("plain-")}
    check(idempotent == {f"idempotent-{n}": 1 for n in range(10)}, f"idempotent: {idempotent}")
    check(plain == {f"plain-{n}": 2 for n in range(10)}, f"plain: {plain}")
    print("a produce whose answer was lost: stored once (idempotent), twice (plain)")


def before(client: Client, replicas: int) -> None:
    client.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=replicas)
    client.create_queue(QUEUE, replication_factor=replicas)
    client.create_queue(f"{POISON}-dlq", replication_factor=replicas)
    client.create_queue(POISON, replication_factor=replicas, max_receive_count=1,
                        dead_letter_queue=f"{POISON}-dlq", visibility_timeout_ms=300)
    print("created", TOPIC, QUEUE, POISON)
    produce(client, "before")
    consume(client, "before")
    queue = client.queue(QUEUE)
    for n in range(5):
        queue.send(f"job-{n}".encode(), attributes={"n": str(n)})
    print("sent 5 jobs")
    poison = client.queue(POISON)
    poison.send(b"poison")
    moved = []
    deadline = time.monotonic() + 30
    while not moved and time.monotonic() < deadline:
        poison.receive(wait_ms=200)  # received, never acked
        moved = client.queue(f"{POISON}-dlq").receive(wait_ms=500)
    check([m.body for m in moved] == [b"poison"], f"dead-lettered: {moved}")
    client.queue(f"{POISON}-dlq").ack(moved[0].receipt)
    print("dead-lettered poison after 1 receive")
    try:
        client.queue("py-no-such-queue").send(b"x")
        check(False, "a send to a missing queue succeeded")
    except FerryError as error:
        check(error.reason == "QUEUE_NOT_FOUND" and error.metadata.get("queue") == "py-no-such-queue",
              f"missing queue error: {error!r} {error.reason} {error.metadata}")
        print("missing queue:", error.reason)
    once_after_a_lost_answer(client, replicas)


def after(client: Client) -> None:
    produce(client, "after")
    consume(client, "after")
    queue = client.queue(QUEUE)
    bodies = []
    deadline = time.monotonic() + 60
    while len(bodies) < 5 and time.monotonic() < deadline:
        received = queue.receive(max_messages=10, wait_ms=1000)
        if received:
            queue.ack(*[m.receipt for m in received])
            bodies.extend(m.body.decode() for m in received)
    check(sorted(bodies) == [f"job-{n}" for n in range(5)], f"received jobs {bodies}")
    print("received and acked 5 jobs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", required=True)
    parser.add_argument("--phase", choices=["before", "after", "all"], required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--pause", action="store_true")
    args = parser.parse_args()
    with Client(args.servers, retry_deadline=60) as client:
        if args.phase in ("before", "all"):
            before(client, args.replicas)
        if args.pause:
            print("paused", flush=True)
            sys.stdin.readline()
        if args.phase in ("after", "all"):
            after(client)
    print("ok", args.phase)


if __name__ == "__main__":
    main()
