"""Ferry's Python client: a thin layer over the generated ferry.v1 gRPC stubs.

    from ferry import Client

    with Client("127.0.0.1:7070") as client:
        client.create_topic("clicks", partitions=3)
        with client.producer("clicks") as producer:
            producer.send(b"hello", key=b"user-1")
        with client.consumer("reporting", ["clicks"]) as consumer:
            for record in consumer.poll(timeout=5):
                print(record.partition, record.offset, record.value)
"""

from ferry.client import Client
from ferry.consumer import Consumer, Record
from ferry.errors import FerryError
from ferry.producer import Producer, RecordMetadata, partition_for_key
from ferry.queue import Queue

__all__ = [
    "Client",
    "Consumer",
    "FerryError",
    "Producer",
    "Queue",
    "Record",
    "RecordMetadata",
    "partition_for_key",
]
