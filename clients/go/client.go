// Package ferry is Ferry's Go client: a thin layer over the generated ferry.v1 gRPC
// stubs (gen/ferry/v1) with leader routing, a batching producer, a consumer-group
// member that reads decoded messages, queues, and errors read from the standard
// gRPC error details. See README.md.
package ferry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

// Route names what a request is about: ("topic", name, partition) or
// ("queue", name, 0). Requests go to its leader.
type Route struct {
	Kind      string
	Name      string
	Partition uint32
}

// Options configure a Client.
type Options struct {
	// CAFile turns TLS on: the CA the servers' certificates chain to.
	CAFile string
	// CertFile and KeyFile: a client certificate, for mutual TLS.
	CertFile, KeyFile string
	// Token is sent as a bearer token.
	Token string
	// Timeout bounds one call (default 10 s).
	Timeout time.Duration
	// RetryDeadline bounds the retries of one operation (default 30 s).
	RetryDeadline time.Duration
	// DialOptions are added to every connection's (interceptors, for example).
	DialOptions []grpc.DialOption
}

// Client talks to one Ferry deployment: a standalone broker, a cluster's hosts,
// or a gateway.
type Client struct {
	servers     []string
	options     Options
	credentials credentials.TransportCredentials

	mu         sync.Mutex
	server     int
	conns      map[string]*grpc.ClientConn
	leaders    map[Route]string
	partitions map[string]int
}

// NewClient makes a client of the deployment at `servers` (host:port addresses
// to start from). Connections open lazily.
func NewClient(servers []string, options Options) (*Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("ferry: at least one server address is needed")
	}
	if options.Timeout == 0 {
		options.Timeout = 10 * time.Second
	}
	if options.RetryDeadline == 0 {
		options.RetryDeadline = 30 * time.Second
	}
	creds := insecure.NewCredentials()
	if options.CAFile != "" {
		pem, err := os.ReadFile(options.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ferry: reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ferry: %s holds no PEM certificate", options.CAFile)
		}
		config := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if options.CertFile != "" {
			pair, err := tls.LoadX509KeyPair(options.CertFile, options.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("ferry: reading the client certificate: %w", err)
			}
			config.Certificates = []tls.Certificate{pair}
		}
		creds = credentials.NewTLS(config)
	}
	return &Client{
		servers:     append([]string(nil), servers...),
		options:     options,
		credentials: creds,
		conns:       map[string]*grpc.ClientConn{},
		leaders:     map[Route]string{},
		partitions:  map[string]int{},
	}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for address, conn := range c.conns {
		_ = conn.Close()
		delete(c.conns, address)
	}
	return nil
}

func (c *Client) conn(address string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[address]; ok {
		return conn, nil
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(c.credentials),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}, c.options.DialOptions...)
	conn, err := grpc.NewClient(address, dial...)
	if err != nil {
		return nil, err
	}
	c.conns[address] = conn
	return conn, nil
}

func (c *Client) currentServer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[c.server]
}

func (c *Client) rotate(from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.servers[c.server] == from {
		c.server = (c.server + 1) % len(c.servers)
	}
}

// Leader is the address `route`'s requests go to, if the client knows one.
func (c *Client) Leader(route Route) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaders[route]
}

// LearnLeader sends `route`'s requests to `address` from now on.
func (c *Client) LearnLeader(route Route, address string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders[route] = address
}

func (c *Client) forget(route Route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.leaders, route)
}

func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.options.Timeout)
	if c.options.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.options.Token)
	}
	return ctx, cancel
}

// once calls `call` on the connection to `address` once, with the call timeout.
func (c *Client) once(ctx context.Context, address string, call func(context.Context, *grpc.ClientConn) error) *Error {
	conn, err := c.conn(address)
	if err != nil {
		return &Error{Message: err.Error(), Code: codes.Unknown}
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if err := call(ctx, conn); err != nil {
		ferryErr := FromError(err)
		if ferryErr.unreachable() {
			c.rotate(address)
		}
		return ferryErr
	}
	return nil
}

// routed calls `call` at `route`'s leader (a server when none is known, or when
// route is nil), following NOT_LEADER and retrying retriable failures until the
// retry deadline.
func (c *Client) routed(ctx context.Context, route *Route, call func(context.Context, *grpc.ClientConn) error) error {
	deadline := time.Now().Add(c.options.RetryDeadline)
	for {
		target := ""
		if route != nil {
			target = c.Leader(*route)
		}
		if target == "" {
			target = c.currentServer()
		}
		err := c.once(ctx, target, call)
		if err == nil {
			return nil
		}
		switch {
		case err.Reason == "NOT_LEADER" && err.LeaderAddress != "" && route != nil:
			c.LearnLeader(*route, err.LeaderAddress)
		case err.Reason == "NOT_LEADER" && route == nil:
			return err
		case err.Reason == "NOT_LEADER" || err.unreachable():
			if route != nil {
				c.forget(*route)
				if route.Kind == "topic" {
					_, _ = c.Refresh(ctx, route.Name)
				} else {
					_, _ = c.Refresh(ctx)
				}
			}
		}
		if !(err.Retriable() || err.unreachable()) || time.Now().After(deadline) {
			return err
		}
		pause := min(max(err.RetryAfter, 50*time.Millisecond), time.Second)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// Refresh reads who leads what (for `topics`, or all) and remembers it.
func (c *Client) Refresh(ctx context.Context, topics ...string) (*ferryv1.GetMetadataResponse, error) {
	var answer *ferryv1.GetMetadataResponse
	var last *Error
	for range c.servers {
		server := c.currentServer()
		last = c.once(ctx, server, func(ctx context.Context, conn *grpc.ClientConn) error {
			var err error
			answer, err = ferryv1.NewMetadataServiceClient(conn).GetMetadata(ctx,
				&ferryv1.GetMetadataRequest{Topics: topics})
			return err
		})
		if last == nil || !last.unreachable() {
			break
		}
	}
	if last != nil {
		return nil, last
	}
	hosts := map[string]string{}
	for _, host := range answer.GetHosts() {
		if host.GetAlive() {
			hosts[host.GetHostId()] = host.GetAddress()
		}
	}
	standalone := answer.GetCluster() == "standalone"
	c.mu.Lock()
	defer c.mu.Unlock()
	learn := func(kind string, entries []*ferryv1.TopicMetadata) {
		for _, entry := range entries {
			if kind == "topic" {
				c.partitions[entry.GetName()] = len(entry.GetPartitions())
			}
			for _, partition := range entry.GetPartitions() {
				route := Route{kind, entry.GetName(), partition.GetPartition()}
				address, ok := hosts[partition.GetLeaderHostId()]
				if ok && !standalone {
					c.leaders[route] = address
				} else {
					delete(c.leaders, route)
				}
			}
		}
	}
	learn("topic", answer.GetTopics())
	learn("queue", answer.GetQueues())
	return answer, nil
}

// Partitions is the topic's partition count (read once, then remembered).
func (c *Client) Partitions(ctx context.Context, topic string) (int, error) {
	deadline := time.Now().Add(c.options.RetryDeadline)
	for {
		c.mu.Lock()
		count := c.partitions[topic]
		c.mu.Unlock()
		if count > 0 {
			return count, nil
		}
		if _, err := c.Refresh(ctx, topic); err != nil {
			return 0, err
		}
		c.mu.Lock()
		count = c.partitions[topic]
		c.mu.Unlock()
		if count > 0 {
			return count, nil
		}
		if time.Now().After(deadline) {
			return 0, &Error{Code: codes.NotFound, Reason: "TOPIC_NOT_FOUND", Message: fmt.Sprintf("topic %q not found", topic)}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TopicConfig is what CreateTopic takes.
type TopicConfig = ferryv1.TopicConfig

// CreateTopic creates a topic.
func (c *Client) CreateTopic(ctx context.Context, name string, config *TopicConfig) error {
	return c.routed(ctx, nil, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := ferryv1.NewAdminServiceClient(conn).CreateTopic(ctx,
			&ferryv1.CreateTopicRequest{Name: name, Config: config})
		return err
	})
}

// DeleteTopic deletes a topic and its data.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	return c.routed(ctx, nil, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := ferryv1.NewAdminServiceClient(conn).DeleteTopic(ctx, &ferryv1.DeleteTopicRequest{Name: name})
		return err
	})
}

// QueueConfig is what CreateQueue takes.
type QueueConfig = ferryv1.QueueConfig

// CreateQueue creates a queue.
func (c *Client) CreateQueue(ctx context.Context, name string, config *QueueConfig) error {
	return c.routed(ctx, nil, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := ferryv1.NewQueueServiceClient(conn).CreateQueue(ctx,
			&ferryv1.CreateQueueRequest{Name: name, Config: config})
		return err
	})
}

// SplitServers splits a comma-separated server list.
func SplitServers(list string) []string {
	var servers []string
	for _, server := range strings.Split(list, ",") {
		if server = strings.TrimSpace(server); server != "" {
			servers = append(servers, server)
		}
	}
	return servers
}
