package ferry

import (
	"context"
	"hash/crc32"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

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

// ProducerOptions configure a Producer.
type ProducerOptions struct {
	// AtLeastOnce sends plain messages the broker places itself: a request sent
	// again after its answer was lost may be stored twice. By default a producer
	// is idempotent: it takes an id from the broker (InitProducer), places each
	// message on a partition and numbers the messages per partition, so the broker
	// stores a retried request once.
	AtLeastOnce bool
}

// Producer sends messages to one topic: keyed ones to the leader of their key's
// partition, keyless ones spread one message at a time. A request whose answer was
// lost is sent again; unless AtLeastOnce, the broker stores it once.
type Producer struct {
	client  *Client
	topic   string
	options ProducerOptions
	turn    int
	mu      sync.Mutex
	// The idempotent producer's identity and next sequence per partition; dropped
	// after a batch fails for good (its numbers may or may not be stored), so the
	// next Send starts over under a new identity.
	identity  *ferryv1.ProducerIdentity
	sequences map[uint32]int32
}

// Producer makes an idempotent producer to `topic`.
func (c *Client) Producer(topic string) *Producer {
	return c.ProducerWith(topic, ProducerOptions{})
}

// ProducerWith makes a producer to `topic` with `options`.
func (c *Client) ProducerWith(topic string, options ProducerOptions) *Producer {
	return &Producer{client: c, topic: topic, options: options}
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
	if !p.options.AtLeastOnce {
		return p.sendPlaced(ctx, todo, out)
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
	request := &ferryv1.ProduceRequest{Topic: p.topic}
	for _, item := range group {
		request.Messages = append(request.Messages, item.message)
	}
	answer, retry, err := p.produce(ctx, address, request, deadline)
	if retry {
		return group, nil
	}
	if err != nil {
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

// entry is messages placed on one partition, numbered from baseSequence.
type entry struct {
	partition    uint32
	baseSequence int32
	items        []pending
}

// sendPlaced is the idempotent path: every message is placed and numbered before
// the first send, and an entry sent again keeps its numbers, so the broker answers
// a retry of a stored entry with the original offsets.
func (p *Producer) sendPlaced(ctx context.Context, todo []pending, out []RecordMetadata) ([]RecordMetadata, error) {
	if p.identity == nil {
		var answer *ferryv1.InitProducerResponse
		err := p.client.routed(ctx, nil, func(ctx context.Context, conn *grpc.ClientConn) error {
			var err error
			answer, err = ferryv1.NewTopicServiceClient(conn).InitProducer(ctx, &ferryv1.InitProducerRequest{})
			return err
		})
		if err != nil {
			return nil, err
		}
		p.identity = &ferryv1.ProducerIdentity{ProducerId: answer.GetProducerId(), ProducerEpoch: answer.GetProducerEpoch()}
		p.sequences = map[uint32]int32{}
	}
	partitions, err := p.client.Partitions(ctx, p.topic)
	if err != nil {
		return nil, err
	}
	var entries []*entry
	byPartition := map[uint32]*entry{}
	for _, item := range todo {
		var partition uint32
		if item.message.Key != nil {
			partition = uint32(PartitionForKey(item.message.Key, partitions))
		} else {
			partition = uint32(p.turn % partitions)
			p.turn++
		}
		e, ok := byPartition[partition]
		if !ok {
			e = &entry{partition: partition}
			byPartition[partition] = e
			entries = append(entries, e)
		}
		e.items = append(e.items, item)
	}
	for _, e := range entries {
		e.baseSequence = p.sequences[e.partition]
		p.sequences[e.partition] = int32((int64(e.baseSequence) + int64(len(e.items))) % (1 << 31))
	}
	deadline := time.Now().Add(p.client.options.RetryDeadline)
	for len(entries) > 0 {
		groups := map[string][]*entry{}
		for _, e := range entries {
			address := p.client.Leader(Route{"topic", p.topic, e.partition})
			groups[address] = append(groups[address], e)
		}
		entries = nil
		for address, group := range groups {
			again, err := p.sendEntries(ctx, address, group, out, deadline)
			if err != nil {
				p.identity = nil
				return nil, err
			}
			entries = append(entries, again...)
		}
		if len(entries) > 0 {
			time.Sleep(50 * time.Millisecond)
			_, _ = p.client.Refresh(ctx, p.topic)
		}
	}
	return out, nil
}

// sendEntries sends `group` to `address` (a server when empty); the entries to
// send again.
func (p *Producer) sendEntries(ctx context.Context, address string, group []*entry, out []RecordMetadata, deadline time.Time) ([]*entry, error) {
	request := &ferryv1.ProduceRequest{Topic: p.topic, Producer: p.identity}
	for _, e := range group {
		placed := &ferryv1.PartitionMessages{Partition: e.partition, BaseSequence: e.baseSequence}
		for _, item := range e.items {
			placed.Messages = append(placed.Messages, item.message)
		}
		request.PartitionMessages = append(request.PartitionMessages, placed)
	}
	answer, retry, err := p.produce(ctx, address, request, deadline)
	if retry {
		return group, nil
	}
	if err != nil {
		return nil, err
	}
	results := answer.GetPartitionMessageBatches()
	var again []*entry
	for i, e := range group {
		if i >= len(results) {
			return nil, &Error{Code: codes.Internal, Message: "the broker answered fewer entries than were sent"}
		}
		result := results[i]
		if result.GetError().GetCode() != ferryv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			failure := fromDetail(result.GetError())
			if failure.Retriable() && time.Now().Before(deadline) {
				again = append(again, e)
				continue
			}
			return nil, failure
		}
		for n, item := range e.items {
			out[item.index] = RecordMetadata{p.topic, e.partition, result.GetBaseOffset() + uint64(n)}
		}
	}
	return again, nil
}

// produce sends `request` once to `address` (a server when empty). `again` when it
// failed in a way a retry may fix and the deadline allows one.
func (p *Producer) produce(ctx context.Context, address string, request *ferryv1.ProduceRequest,
	deadline time.Time) (answer *ferryv1.ProduceResponse, again bool, err error) {
	if address == "" {
		address = p.client.currentServer()
	}
	failure := p.client.once(ctx, address, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		answer, err = ferryv1.NewTopicServiceClient(conn).Produce(ctx, request)
		return err
	})
	if failure != nil {
		if (failure.Retriable() || failure.unreachable()) && time.Now().Before(deadline) {
			return nil, true, nil
		}
		return nil, false, failure
	}
	return answer, false, nil
}
