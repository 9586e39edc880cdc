package ferry

// The Go client against a running Ferry, driven by broker/tests/go_client.rs
// (standalone) and e2e/tests/go_client.rs (three hosts, a leader killed while the
// test waits for FERRY_RESUME_FILE). Without FERRY_SERVERS the scenario fails under
// CI=true and is skipped otherwise; the unit tests need no broker.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

const (
	scenarioTopic  = "go-events"
	scenarioQueue  = "go-jobs"
	scenarioPoison = "go-poison"
	scenarioOnce   = "go-once"
)

func TestKeysMapToPartitionsAsTheBrokerMapsThem(t *testing.T) {
	// CRC32C's check value: the same function as the broker's.
	if got := PartitionForKey([]byte("123456789"), 1<<31); got != 0xE3069283%(1<<31) {
		t.Fatalf("crc32c check value: %x", got)
	}
	if PartitionForKey([]byte("x"), 0) != 0 {
		t.Fatal("no partitions: 0")
	}
}

func TestErrorsAreReadFromTheStandardDetails(t *testing.T) {
	st, err := status.New(codes.Unavailable, "not the leader").WithDetails(
		&errdetails.ErrorInfo{Reason: "NOT_LEADER", Domain: Domain, Metadata: map[string]string{"topic": "t"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(100 * time.Millisecond)},
		&ferryv1.LeaderHint{Topic: "t", Address: "10.0.0.2:7070"},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := FromError(st.Err())
	if got.Reason != "NOT_LEADER" || got.Metadata["topic"] != "t" || got.RetryAfter != 100*time.Millisecond ||
		got.LeaderAddress != "10.0.0.2:7070" || !got.Retriable() {
		t.Fatalf("decoded %+v", got)
	}
	other, _ := status.New(codes.NotFound, "no").WithDetails(&errdetails.ErrorInfo{Reason: "NOT_FOUND", Domain: "example.com"})
	if got := FromError(other.Err()); got.Reason != "" || got.Retriable() {
		t.Fatalf("another domain: %+v", got)
	}
}

func check(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}

func TestScenario(t *testing.T) {
	servers := os.Getenv("FERRY_SERVERS")
	if servers == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("FERRY_SERVERS is not set: the scenario needs a running broker")
		}
		t.Skip("FERRY_SERVERS is not set")
	}
	replicas := uint32(1)
	if os.Getenv("FERRY_REPLICAS") == "3" {
		replicas = 3
	}
	client, err := NewClient(SplitServers(servers), Options{RetryDeadline: 60 * time.Second})
	check(t, err == nil, "client: %v", err)
	defer client.Close()
	ctx := context.Background()

	check(t, client.CreateTopic(ctx, scenarioTopic, &TopicConfig{Partitions: 3, ReplicationFactor: replicas}) == nil, "create topic")
	for _, q := range []struct {
		name   string
		config *QueueConfig
	}{
		{scenarioQueue, &QueueConfig{ReplicationFactor: replicas}},
		{scenarioPoison + "-dlq", &QueueConfig{ReplicationFactor: replicas}},
		{scenarioPoison, &QueueConfig{ReplicationFactor: replicas, MaxReceiveCount: ptr(uint32(1)),
			DeadLetterQueue: ptr(scenarioPoison + "-dlq"), VisibilityTimeoutMs: ptr(uint64(300))}},
	} {
		err := client.CreateQueue(ctx, q.name, q.config)
		check(t, err == nil, "create queue %s: %v", q.name, err)
	}
	produce(t, ctx, client, "before")
	consume(t, ctx, client, "before")
	jobs := client.Queue(scenarioQueue)
	for n := range 5 {
		_, err := jobs.Send(ctx, &ferryv1.SendMessage{Body: fmt.Appendf(nil, "job-%d", n)})
		check(t, err == nil, "send: %v", err)
	}
	poison, dlq := client.Queue(scenarioPoison), client.Queue(scenarioPoison+"-dlq")
	_, err = poison.Send(ctx, &ferryv1.SendMessage{Body: []byte("poison")})
	check(t, err == nil, "send poison: %v", err)
	var moved []*ferryv1.ReceivedMessage
	for deadline := time.Now().Add(30 * time.Second); len(moved) == 0 && time.Now().Before(deadline); {
		_, _ = poison.Receive(ctx, 1, 200) // received, never acked
		moved, err = dlq.Receive(ctx, 1, 500)
		check(t, err == nil, "receive from the dead-letter queue: %v", err)
	}
	check(t, len(moved) == 1 && string(moved[0].GetBody()) == "poison", "dead-lettered: %v", moved)
	check(t, dlq.Ack(ctx, moved[0].GetReceipt()) == nil, "ack the dead letter")
	_, err = client.Queue("go-no-such-queue").Send(ctx, &ferryv1.SendMessage{Body: []byte("x")})
	missing := FromError(err)
	check(t, missing.Reason == "QUEUE_NOT_FOUND" && missing.Metadata["queue"] == "go-no-such-queue", "missing queue: %+v", missing)
	onceAfterALostAnswer(t, ctx, servers, replicas)
	t.Log("before: done")

	if resume := os.Getenv("FERRY_RESUME_FILE"); resume != "" {
		fmt.Println("paused")
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if _, err := os.Stat(resume); err == nil {
				break
			}
			check(t, time.Now().Before(deadline), "never resumed")
		}
	}

	produce(t, ctx, client, "after")
	consume(t, ctx, client, "after")
	var bodies []string
	for deadline := time.Now().Add(60 * time.Second); len(bodies) < 5 && time.Now().Before(deadline); {
		received, err := jobs.Receive(ctx, 10, 1000)
		check(t, err == nil, "receive jobs: %v", err)
		for _, m := range received {
			check(t, jobs.Ack(ctx, m.GetReceipt()) == nil, "ack %s", m.GetBody())
			bodies = append(bodies, string(m.GetBody()))
		}
	}
	sort.Strings(bodies)
	check(t, fmt.Sprint(bodies) == "[job-0 job-1 job-2 job-3 job-4]", "jobs: %v", bodies)
	fmt.Println("scenario: ok")
}

func ptr[T any](value T) *T { return &value }

func produce(t *testing.T, ctx context.Context, client *Client, prefix string) {
	t.Helper()
	var messages []Message
	for n := range 30 {
		var key []byte
		if n%2 == 1 {
			key = fmt.Appendf(nil, "user-%d", n%7)
		}
		messages = append(messages, Message{Key: key, Value: fmt.Appendf(nil, "%s-%d", prefix, n),
			Headers: map[string][]byte{"n": fmt.Append(nil, n)}})
	}
	var stored []RecordMetadata
	var err error
	if prefix == "after" {
		// The background batching producer: each Send returns at once.
		async := client.AsyncProducer(scenarioTopic, AsyncOptions{Linger: 10 * time.Millisecond, BatchSize: 8})
		var results []<-chan Result
		for _, m := range messages {
			results = append(results, async.Send(m))
		}
		check(t, async.Flush(ctx) == nil, "flush")
		for _, result := range results {
			r := <-result
			if r.Err != nil && err == nil {
				err = r.Err
			}
			stored = append(stored, r.Metadata)
		}
		check(t, async.Close(ctx) == nil, "close")
		late := <-async.Send(Message{Value: []byte("late")})
		check(t, errors.Is(late.Err, ErrClosed), "a send after close: %v", late.Err)
	} else {
		stored, err = client.Producer(scenarioTopic).Send(ctx, messages...)
	}
	check(t, err == nil, "produce %s: %v", prefix, err)
	for i, meta := range stored {
		if key := messages[i].Key; key != nil {
			check(t, int(meta.Partition) == PartitionForKey(key, 3), "%s on partition %d", key, meta.Partition)
		}
	}
	fmt.Printf("produced 30 %s messages\n", prefix)
}

func consume(t *testing.T, ctx context.Context, client *Client, prefix string) {
	t.Helper()
	consumer, err := client.Consumer(ctx, "readers", []string{scenarioTopic}, ConsumerOptions{})
	check(t, err == nil, "join: %v", err)
	seen := map[string]int{}
	for deadline := time.Now().Add(60 * time.Second); len(seen) < 30 && time.Now().Before(deadline); {
		records, err := consumer.Poll(ctx, time.Second)
		check(t, err == nil, "poll: %v", err)
		for _, r := range records {
			check(t, r.Headers["n"] != nil, "headers kept: %+v", r)
			seen[string(r.Value)]++
		}
	}
	check(t, consumer.Close(ctx) == nil, "close")
	for n := range 30 {
		value := fmt.Sprintf("%s-%d", prefix, n)
		check(t, seen[value] == 1, "%s consumed %d times (all: %v)", value, seen[value], seen)
	}
	check(t, len(seen) == 30, "consumed other messages too: %v", seen)
	fmt.Printf("consumed the 30 %s messages as group readers\n", prefix)
}

// produceLosingAnAnswer sends 10 messages to scenarioOnce in one request whose
// answer is lost after the broker stored them (an interceptor turns the first
// Produce's answer into UNAVAILABLE): the producer sends the same request again.
func produceLosingAnAnswer(t *testing.T, ctx context.Context, servers, prefix string, options ProducerOptions) {
	t.Helper()
	var lost atomic.Bool
	loseOnce := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && method == ferryv1.TopicService_Produce_FullMethodName && lost.CompareAndSwap(false, true) {
			return status.Error(codes.Unavailable, "the answer was lost (test)")
		}
		return err
	}
	client, err := NewClient(SplitServers(servers), Options{RetryDeadline: 60 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(loseOnce)}})
	check(t, err == nil, "client: %v", err)
	defer client.Close()
	var messages []Message
	for n := range 10 {
		messages = append(messages, Message{Value: fmt.Appendf(nil, "%s-%d", prefix, n)})
	}
	stored, err := client.ProducerWith(scenarioOnce, options).Send(ctx, messages...)
	check(t, err == nil, "produce %s: %v", prefix, err)
	check(t, lost.Load(), "an answer was lost")
	seen := map[uint64]bool{}
	for _, meta := range stored {
		seen[meta.Offset] = true
	}
	check(t, len(seen) == 10, "%s: offsets %v", prefix, stored)
}

// onceAfterALostAnswer: the idempotent producer's retry is stored once, a plain
// (AtLeastOnce) producer's twice.
func onceAfterALostAnswer(t *testing.T, ctx context.Context, servers string, replicas uint32) {
	t.Helper()
	client, err := NewClient(SplitServers(servers), Options{RetryDeadline: 60 * time.Second})
	check(t, err == nil, "client: %v", err)
	defer client.Close()
	err = client.CreateTopic(ctx, scenarioOnce, &TopicConfig{Partitions: 1, ReplicationFactor: replicas})
	check(t, err == nil, "create %s: %v", scenarioOnce, err)
	produceLosingAnAnswer(t, ctx, servers, "idempotent", ProducerOptions{})
	produceLosingAnAnswer(t, ctx, servers, "plain", ProducerOptions{AtLeastOnce: true})
	consumer, err := client.Consumer(ctx, "once-readers", []string{scenarioOnce}, ConsumerOptions{})
	check(t, err == nil, "join: %v", err)
	seen := map[string]int{}
	for deadline, total := time.Now().Add(60*time.Second), 0; total < 30 && time.Now().Before(deadline); {
		records, err := consumer.Poll(ctx, time.Second)
		check(t, err == nil, "poll: %v", err)
		for _, r := range records {
			seen[string(r.Value)]++
			total++
		}
	}
	check(t, consumer.Close(ctx) == nil, "close")
	for n := range 10 {
		idempotent, plain := fmt.Sprintf("idempotent-%d", n), fmt.Sprintf("plain-%d", n)
		check(t, seen[idempotent] == 1 && seen[plain] == 2, "stored counts: %v", seen)
	}
	fmt.Println("a produce whose answer was lost: stored once (idempotent), twice (plain)")
}
