package ferry

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

// Record is a consumed message.
type Record struct {
	Topic       string
	Partition   uint32
	Offset      uint64
	Key         []byte // nil: keyless
	Value       []byte
	Headers     map[string][]byte
	TimestampMs int64
}

type topicPartition struct {
	topic     string
	partition uint32
}

// ConsumerOptions configure a consumer-group member.
type ConsumerOptions struct {
	// SessionTimeout: the member is gone after this long without a heartbeat
	// (default 10 s).
	SessionTimeout time.Duration
	// Latest starts partitions without a committed offset at their end instead of
	// their start.
	Latest bool
	// ClientID names the member in DescribeGroup.
	ClientID string
}

// Consumer is a member of a consumer group: the coordinator assigns partitions
// (moving one only after its previous owner released it), the member reads decoded
// messages from each partition's leader and commits how far it handed them out.
type Consumer struct {
	client        *Client
	group         string
	topics        []string
	options       ConsumerOptions
	memberID      string
	interval      time.Duration
	nextHeartbeat time.Time
	positions     map[topicPartition]uint64
	committed     map[topicPartition]uint64
}

// Consumer joins `group` for `topics`.
func (c *Client) Consumer(ctx context.Context, group string, topics []string, options ConsumerOptions) (*Consumer, error) {
	if options.SessionTimeout == 0 {
		options.SessionTimeout = 10 * time.Second
	}
	if options.ClientID == "" {
		options.ClientID = "ferry-go"
	}
	consumer := &Consumer{client: c, group: group, topics: topics, options: options}
	if err := consumer.join(ctx); err != nil {
		return nil, err
	}
	return consumer, nil
}

func (m *Consumer) groupCall(ctx context.Context, call func(context.Context, ferryv1.GroupServiceClient) error) error {
	return m.client.routed(ctx, nil, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, ferryv1.NewGroupServiceClient(conn))
	})
}

func (m *Consumer) join(ctx context.Context) error {
	var answer *ferryv1.JoinGroupResponse
	err := m.groupCall(ctx, func(ctx context.Context, g ferryv1.GroupServiceClient) error {
		var err error
		answer, err = g.JoinGroup(ctx, &ferryv1.JoinGroupRequest{
			Group: m.group, Topics: m.topics, ClientId: m.options.ClientID,
			SessionTimeoutMs: uint32(m.options.SessionTimeout.Milliseconds()),
		})
		return err
	})
	if err != nil {
		return err
	}
	m.memberID = answer.GetMemberId()
	m.interval = max(time.Duration(answer.GetHeartbeatIntervalMs())*time.Millisecond, 100*time.Millisecond)
	m.nextHeartbeat = time.Now().Add(m.interval)
	m.positions = map[topicPartition]uint64{}
	m.committed = map[topicPartition]uint64{}
	return m.assign(ctx, answer.GetAssigned())
}

// Assignment is the partitions this member reads now, as "topic/partition".
func (m *Consumer) Assignment() []string {
	var out []string
	for tp := range m.positions {
		out = append(out, fmt.Sprintf("%s/%d", tp.topic, tp.partition))
	}
	sort.Strings(out)
	return out
}

func (m *Consumer) assign(ctx context.Context, assigned []*ferryv1.TopicPartition) error {
	keep := map[topicPartition]bool{}
	for _, tp := range assigned {
		keep[topicPartition{tp.GetTopic(), tp.GetPartition()}] = true
	}
	var released []topicPartition
	for tp := range m.positions {
		if !keep[tp] {
			released = append(released, tp)
		}
	}
	if len(released) > 0 {
		if err := m.commit(ctx, released); err != nil {
			return err
		}
		for _, tp := range released {
			delete(m.positions, tp)
			delete(m.committed, tp)
		}
	}
	var fresh []*ferryv1.TopicPartition
	for _, tp := range assigned {
		if _, ok := m.positions[topicPartition{tp.GetTopic(), tp.GetPartition()}]; !ok {
			fresh = append(fresh, tp)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	var answer *ferryv1.FetchOffsetsResponse
	err := m.groupCall(ctx, func(ctx context.Context, g ferryv1.GroupServiceClient) error {
		var err error
		answer, err = g.FetchOffsets(ctx, &ferryv1.FetchOffsetsRequest{Group: m.group, Partitions: fresh})
		return err
	})
	if err != nil {
		return err
	}
	stored := map[topicPartition]uint64{}
	for _, o := range answer.GetOffsets() {
		stored[topicPartition{o.GetTopic(), o.GetPartition()}] = o.GetOffset()
	}
	for _, tp := range fresh {
		key := topicPartition{tp.GetTopic(), tp.GetPartition()}
		if offset, ok := stored[key]; ok {
			m.positions[key], m.committed[key] = offset, offset
			continue
		}
		offset, err := m.resetOffset(ctx, key)
		if err != nil {
			return err
		}
		m.positions[key] = offset
	}
	return nil
}

func (m *Consumer) resetOffset(ctx context.Context, tp topicPartition) (uint64, error) {
	query := &ferryv1.OffsetQuery{Partition: tp.partition, Spec: &ferryv1.OffsetQuery_Earliest{Earliest: true}}
	if m.options.Latest {
		query.Spec = &ferryv1.OffsetQuery_Latest{Latest: true}
	}
	var answer *ferryv1.ListOffsetsResponse
	route := Route{"topic", tp.topic, tp.partition}
	err := m.client.routed(ctx, &route, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		answer, err = ferryv1.NewTopicServiceClient(conn).ListOffsets(ctx,
			&ferryv1.ListOffsetsRequest{Topic: tp.topic, Queries: []*ferryv1.OffsetQuery{query}})
		return err
	})
	if err != nil {
		return 0, err
	}
	if len(answer.GetOffsets()) == 0 {
		return 0, errors.New("ferry: ListOffsets answered nothing")
	}
	return answer.GetOffsets()[0].GetOffset(), nil
}

func (m *Consumer) heartbeat(ctx context.Context) error {
	if time.Now().Before(m.nextHeartbeat) {
		return nil
	}
	var owned []*ferryv1.TopicPartition
	for tp := range m.positions {
		owned = append(owned, &ferryv1.TopicPartition{Topic: tp.topic, Partition: tp.partition})
	}
	var answer *ferryv1.HeartbeatResponse
	err := m.groupCall(ctx, func(ctx context.Context, g ferryv1.GroupServiceClient) error {
		var err error
		answer, err = g.Heartbeat(ctx, &ferryv1.HeartbeatRequest{Group: m.group, MemberId: m.memberID, Owned: owned})
		return err
	})
	if err != nil {
		if FromError(err).Reason == "UNKNOWN_MEMBER" {
			// The session ran out: join again (uncommitted progress is read again).
			return m.join(ctx)
		}
		return err
	}
	m.interval = max(time.Duration(answer.GetHeartbeatIntervalMs())*time.Millisecond, 100*time.Millisecond)
	m.nextHeartbeat = time.Now().Add(m.interval)
	return m.assign(ctx, answer.GetAssigned())
}

// Poll returns the next messages of the assigned partitions, waiting up to
// `timeout` for some.
func (m *Consumer) Poll(ctx context.Context, timeout time.Duration) ([]Record, error) {
	end := time.Now().Add(timeout)
	for {
		if err := m.heartbeat(ctx); err != nil {
			return nil, err
		}
		wait := min(time.Until(end), m.interval)
		records, err := m.fetch(ctx, max(wait, 0))
		if err != nil || len(records) > 0 || !time.Now().Before(end) {
			return records, err
		}
	}
}

func (m *Consumer) fetch(ctx context.Context, wait time.Duration) ([]Record, error) {
	if len(m.positions) == 0 {
		time.Sleep(wait)
		return nil, nil
	}
	byHost := map[string][]*ferryv1.FetchPartition{}
	for tp, offset := range m.positions {
		address := m.client.Leader(Route{"topic", tp.topic, tp.partition})
		if address == "" {
			address = m.client.currentServer()
		}
		byHost[address] = append(byHost[address], &ferryv1.FetchPartition{
			Topic: tp.topic, Partition: tp.partition, Offset: offset,
		})
	}
	var records []Record
	waitMs := uint32(min(wait, 500*time.Millisecond).Milliseconds()) / uint32(len(byHost))
	for address, partitions := range byHost {
		var answer *ferryv1.FetchResponse
		err := m.client.once(ctx, address, func(ctx context.Context, conn *grpc.ClientConn) error {
			var err error
			answer, err = ferryv1.NewTopicServiceClient(conn).Fetch(ctx, &ferryv1.FetchRequest{
				Partitions: partitions, MaxWaitMs: waitMs, Decode: true,
			})
			return err
		})
		if err != nil {
			if !(err.Retriable() || err.unreachable()) {
				return records, err
			}
			_, _ = m.client.Refresh(ctx, m.topics...)
			continue
		}
		for _, fetched := range answer.GetPartitions() {
			taken, err := m.take(ctx, fetched)
			if err != nil {
				return records, err
			}
			records = append(records, taken...)
		}
	}
	return records, nil
}

func (m *Consumer) take(ctx context.Context, fetched *ferryv1.FetchedPartition) ([]Record, error) {
	tp := topicPartition{fetched.GetTopic(), fetched.GetPartition()}
	position, ok := m.positions[tp]
	if !ok {
		return nil, nil
	}
	if fetched.GetError().GetCode() != ferryv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		err := fromDetail(fetched.GetError())
		switch {
		case err.Reason == "NOT_LEADER" && err.LeaderAddress != "":
			m.client.LearnLeader(Route{"topic", tp.topic, tp.partition}, err.LeaderAddress)
		case err.Reason == "NOT_LEADER":
			_, _ = m.client.Refresh(ctx, tp.topic)
		case err.Reason == "OFFSET_OUT_OF_RANGE":
			offset, resetErr := m.resetOffset(ctx, tp)
			if resetErr != nil {
				return nil, resetErr
			}
			m.positions[tp] = offset
		case !err.Retriable():
			return nil, err
		}
		return nil, nil
	}
	m.positions[tp] = max(position, fetched.GetNextOffset())
	records := make([]Record, 0, len(fetched.GetMessages()))
	for _, message := range fetched.GetMessages() {
		headers := map[string][]byte{}
		for _, h := range message.GetHeaders() {
			headers[h.GetKey()] = h.GetValue()
		}
		records = append(records, Record{
			Topic: tp.topic, Partition: tp.partition, Offset: message.GetOffset(),
			Key: message.Key, Value: message.GetValue(), Headers: headers,
			TimestampMs: message.GetTimestampMs(),
		})
	}
	return records, nil
}

// Commit stores the positions reached by what Poll handed out.
func (m *Consumer) Commit(ctx context.Context) error {
	all := make([]topicPartition, 0, len(m.positions))
	for tp := range m.positions {
		all = append(all, tp)
	}
	return m.commit(ctx, all)
}

func (m *Consumer) commit(ctx context.Context, partitions []topicPartition) error {
	var offsets []*ferryv1.OffsetCommit
	for _, tp := range partitions {
		position, ok := m.positions[tp]
		if committed, done := m.committed[tp]; !ok || (done && committed == position) {
			continue
		}
		offsets = append(offsets, &ferryv1.OffsetCommit{Topic: tp.topic, Partition: tp.partition, Offset: position})
	}
	if len(offsets) == 0 {
		return nil
	}
	err := m.groupCall(ctx, func(ctx context.Context, g ferryv1.GroupServiceClient) error {
		_, err := g.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: m.group, MemberId: m.memberID, Offsets: offsets})
		return err
	})
	if err != nil {
		return err
	}
	for _, o := range offsets {
		m.committed[topicPartition{o.GetTopic(), o.GetPartition()}] = o.GetOffset()
	}
	return nil
}

// Close commits and leaves the group, so its partitions move at once.
func (m *Consumer) Close(ctx context.Context) error {
	commitErr := m.Commit(ctx)
	leaveErr := m.groupCall(ctx, func(ctx context.Context, g ferryv1.GroupServiceClient) error {
		_, err := g.LeaveGroup(ctx, &ferryv1.LeaveGroupRequest{Group: m.group, MemberId: m.memberID})
		return err
	})
	return errors.Join(commitErr, leaveErr)
}
