package ferry

import (
	"context"
	"errors"
	"sync"
	"time"
)

// AsyncOptions configure an AsyncProducer.
type AsyncOptions struct {
	// Linger is how long a message waits for others to share its request
	// (default 5 ms).
	Linger time.Duration
	// BatchSize sends a request as soon as this many messages wait (default 500).
	BatchSize int
	// Producer configures the underlying producer (idempotent by default).
	Producer ProducerOptions
}

// Result is where one message sent through an AsyncProducer was stored, or why
// it was not.
type Result struct {
	Metadata RecordMetadata
	Err      error
}

type queued struct {
	message Message
	result  chan Result
}

// AsyncProducer batches messages in the background: Send returns at once, and
// messages go out together once BatchSize wait or the first has waited Linger,
// through a Producer (so idempotent unless Producer.AtLeastOnce).
type AsyncProducer struct {
	producer *Producer
	options  AsyncOptions
	incoming chan queued
	flushes  chan chan struct{}
	done     chan struct{}
	closing  sync.Once
	// Held for reading by Send and for writing by Close, so no Send races the
	// channel's close.
	mu     sync.RWMutex
	closed bool
}

// ErrClosed is the result of a Send after Close.
var ErrClosed = errors.New("ferry: the producer is closed")

// AsyncProducer makes a background batching producer to `topic`.
func (c *Client) AsyncProducer(topic string, options AsyncOptions) *AsyncProducer {
	if options.Linger <= 0 {
		options.Linger = 5 * time.Millisecond
	}
	if options.BatchSize <= 0 {
		options.BatchSize = 500
	}
	a := &AsyncProducer{
		producer: c.ProducerWith(topic, options.Producer),
		options:  options,
		incoming: make(chan queued, options.BatchSize),
		flushes:  make(chan chan struct{}),
		done:     make(chan struct{}),
	}
	go a.run()
	return a
}

// Send queues `message`; its Result arrives on the returned channel (buffered,
// so nobody has to read it).
func (a *AsyncProducer) Send(message Message) <-chan Result {
	result := make(chan Result, 1)
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		result <- Result{Err: ErrClosed}
		return result
	}
	a.incoming <- queued{message, result}
	return result
}

// Flush waits until every message sent before it has its Result.
func (a *AsyncProducer) Flush(ctx context.Context) error {
	flushed := make(chan struct{})
	select {
	case a.flushes <- flushed:
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends what waits and stops the background sender.
func (a *AsyncProducer) Close(ctx context.Context) error {
	a.closing.Do(func() {
		a.mu.Lock()
		a.closed = true
		close(a.incoming)
		a.mu.Unlock()
	})
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *AsyncProducer) run() {
	defer close(a.done)
	var batch []queued
	var linger <-chan time.Time
	send := func() {
		if len(batch) == 0 {
			return
		}
		messages := make([]Message, len(batch))
		for i, item := range batch {
			messages[i] = item.message
		}
		stored, err := a.producer.Send(context.Background(), messages...)
		for i, item := range batch {
			if err != nil {
				item.result <- Result{Err: err}
			} else {
				item.result <- Result{Metadata: stored[i]}
			}
		}
		batch, linger = nil, nil
	}
	for {
		select {
		case item, open := <-a.incoming:
			if !open {
				send()
				return
			}
			batch = append(batch, item)
			if len(batch) >= a.options.BatchSize {
				send()
			} else if linger == nil {
				linger = time.After(a.options.Linger)
			}
		case <-linger:
			send()
		case flushed := <-a.flushes:
			// Everything sent before the flush is in the channel or the batch.
			for waiting := len(a.incoming); waiting > 0; waiting-- {
				batch = append(batch, <-a.incoming)
			}
			send()
			close(flushed)
		}
	}
}
