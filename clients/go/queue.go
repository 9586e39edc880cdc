package ferry

import (
	"context"

	"google.golang.org/grpc"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

// Queue is one queue of the client's deployment; its requests go to the queue's
// leader, followed through NOT_LEADER answers and metadata.
type Queue struct {
	client *Client
	name   string
	route  Route
}

// Queue is a handle on queue `name`.
func (c *Client) Queue(name string) *Queue {
	return &Queue{client: c, name: name, route: Route{"queue", name, 0}}
}

func (q *Queue) call(ctx context.Context, call func(context.Context, ferryv1.QueueServiceClient) error) error {
	return q.client.routed(ctx, &q.route, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, ferryv1.NewQueueServiceClient(conn))
	})
}

// Send sends messages; their ids, in order.
func (q *Queue) Send(ctx context.Context, messages ...*ferryv1.SendMessage) ([]string, error) {
	var answer *ferryv1.SendResponse
	err := q.call(ctx, func(ctx context.Context, s ferryv1.QueueServiceClient) error {
		var err error
		answer, err = s.Send(ctx, &ferryv1.SendRequest{Queue: q.name, Messages: messages})
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(answer.GetResults()))
	for _, result := range answer.GetResults() {
		ids = append(ids, result.GetMessageId())
	}
	return ids, nil
}

// Receive returns up to `max` messages, waiting up to `waitMs` for the first; each
// stays invisible to others until acked or its visibility timeout passes.
func (q *Queue) Receive(ctx context.Context, max uint32, waitMs uint32) ([]*ferryv1.ReceivedMessage, error) {
	var answer *ferryv1.ReceiveResponse
	err := q.call(ctx, func(ctx context.Context, s ferryv1.QueueServiceClient) error {
		var err error
		answer, err = s.Receive(ctx, &ferryv1.ReceiveRequest{Queue: q.name, MaxMessages: max, WaitMs: &waitMs})
		return err
	})
	if err != nil {
		return nil, err
	}
	return answer.GetMessages(), nil
}

// Ack acknowledges received messages by receipt: they are gone. It returns the
// first receipt's failure (stale: the message was received again meanwhile).
func (q *Queue) Ack(ctx context.Context, receipts ...string) error {
	var answer *ferryv1.AckResponse
	err := q.call(ctx, func(ctx context.Context, s ferryv1.QueueServiceClient) error {
		var err error
		answer, err = s.Ack(ctx, &ferryv1.AckRequest{Queue: q.name, Receipts: receipts})
		return err
	})
	if err != nil {
		return err
	}
	return firstFailure(answer.GetResults())
}

// Nack hands received messages back, visible again after `delayMs`.
func (q *Queue) Nack(ctx context.Context, delayMs uint64, receipts ...string) error {
	var answer *ferryv1.NackResponse
	err := q.call(ctx, func(ctx context.Context, s ferryv1.QueueServiceClient) error {
		var err error
		answer, err = s.Nack(ctx, &ferryv1.NackRequest{Queue: q.name, Receipts: receipts, DelayMs: delayMs})
		return err
	})
	if err != nil {
		return err
	}
	return firstFailure(answer.GetResults())
}

func firstFailure(results []*ferryv1.ReceiptResult) error {
	for _, result := range results {
		if result.GetError().GetCode() != ferryv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			return fromDetail(result.GetError())
		}
	}
	return nil
}
