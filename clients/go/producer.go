package ferry

import (
	"context"
	"hash/crc32"
	"sync"
	"time"

	"google.golang.org/grpc"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// PartitionForKey is the partition a keyed message goes to: CRC32C of the key
// modulo the partition count, as the broker and the other clients compute it.
func PartitionForKey(key []byte, partitions int) int {
	if partitions <= 0 {
		return 0
	}
	return int(crc32.Checksum(key, castagnoli) % uint32(partitions))
}

// Message is one message to produce.
type Message struct {
	Key     []byte // nil: keyless
	Value   []byte
	Headers map[string][]byte
}

// RecordMetadata says where a produced message was stored.
type RecordMetadata struct {
	Topic     string
	Partition uint32
	Offset    uint64
}

// Producer sends messages to one topic in batches: keyed ones to the leader of
// their key's partition, keyless ones spread over the hosts leading the topic.
// Delivery is at least once: a request whose answer was lost is sent again.
type Producer struct {
	client *Client
	topic  string
	turn   int
	mu     sync.Mutex
}

// Producer makes a producer to `topic`.
func (c *Client) Producer(topic string) *Producer {
	return &Producer{client: c, topic: topic}
}

type pending struct {
	index   int
	message *ferryv1.Message
}

// Send stores `messages` (one request per host) and says where each landed, in
// order. It returns the first error of a message that could not be stored.
func (p *Producer) Send(ctx context.Context, messages ...Message) ([]RecordMetadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]RecordMetadata, len(messages))
	todo := make([]pending, len(messages))
	for i, m := range messages {
		message := &ferryv1.Message{Key: m.Key, Value: m.Value}
		for k, v := range m.Headers {
			message.Headers = append(message.Headers, &ferryv1.Header{Key: k, Value: v})
		}
		todo[i] = pending{i, message}
	}
	deadline := time.Now().Add(p.client.options.RetryDeadline)
	for len(todo) > 0 {
		groups, err := p.groupByHost(ctx, todo)
		if err != nil {
			return nil, err
		}
		todo = nil
		for address, group := range groups {
			again, err := p.sendTo(ctx, address, group, out, deadline)
			if err != nil {
				return nil, err
			}
			todo = append(todo, again...)
		}
		if len(todo) > 0 {
			time.Sleep(50 * time.Millisecond)
			_, _ = p.client.Refresh(ctx, p.topic)
		}
	}
	return out, nil
}

func (p *Producer) groupByHost(ctx context.Context, todo []pending) (map[string][]pending, error) {
	partitions, err := p.client.Partitions(ctx, p.topic)
	if err != nil {
		return nil, err
	}
	leaders := make([]string, partitions)
	var known []string
	seen := map[string]bool{}
	for i := range leaders {
		leaders[i] = p.client.Leader(Route{"topic", p.topic, uint32(i)})
		if leaders[i] != "" && !seen[leaders[i]] {
			seen[leaders[i]] = true
			known = append(known, leaders[i])
		}
	}
	groups := map[string][]pending{}
	for _, item := range todo {
		address := ""
		if item.message.Key != nil {
			address = leaders[PartitionForKey(item.message.Key, partitions)]
		} else if len(known) > 0 {
			// A host puts keyless messages on a partition it leads.
			address = known[p.turn%len(known)]
			p.turn++
		}
		groups[address] = append(groups[address], item)
	}
	return groups, nil
}

// sendTo sends `group` to `address` (a server when empty); the messages to send
// again (their partition's leader moved, or the host went away).
func (p *Producer) sendTo(ctx context.Context, address string, group []pending, out []RecordMetadata, deadline time.Time) ([]pending, error) {
	if address == "" {
		address = p.client.currentServer()
	}
	request := &ferryv1.ProduceRequest{Topic: p.topic}
	for _, item := range group {
		request.Messages = append(request.Messages, item.message)
	}
	var answer *ferryv1.ProduceResponse
	err := p.client.once(ctx, address, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		answer, err = ferryv1.NewTopicServiceClient(conn).Produce(ctx, request)
		return err
	})
	if err != nil {
		if (err.Retriable() || err.unreachable()) && time.Now().Before(deadline) {
			return group, nil
		}
		return nil, err
	}
	failed := map[uint32]*Error{}
	for _, result := range answer.GetMessageBatches() {
		if result.GetError().GetCode() != ferryv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			failed[result.GetPartition()] = fromDetail(result.GetError())
		}
	}
	var again []pending
	for i, position := range answer.GetMessages() {
		if i >= len(group) {
			break
		}
		if err, bad := failed[position.GetPartition()]; bad {
			if err.Retriable() && time.Now().Before(deadline) {
				again = append(again, group[i])
				continue
			}
			return nil, err
		}
		out[group[i].index] = RecordMetadata{p.topic, position.GetPartition(), position.GetOffset()}
	}
	return again, nil
}
