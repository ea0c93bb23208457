// Package queue spreads the disks of a batch over many nodes: a NATS
// JetStream work queue carries one message per disk (its job.Spec, plain
// data without secrets), workers on any number of nodes pull them and run
// each through the batch and job layers, and a JetStream key-value bucket
// keeps what the nodes share: every disk's status (queued, running on
// which worker and how far, done, failed and why), the batch bookkeeping
// that lets a resubmission skip finished disks, the resume state of
// uploads (so that the node that takes over a dead node's disk continues
// its multipart upload), and leases that keep two nodes from writing one
// output at once.
//
// The names in the server derive from the queue name N (default
// "convert"): the stream N (subjects N.disk.KEY, work-queue retention, at
// most one message per disk), its durable pull consumer "workers", and the
// bucket N (stream KV_N). Open creates them on first use.
package queue

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says how to reach the queue.
type Config struct {
	// URL is the NATS server, nats://HOST:PORT or tls://HOST:PORT
	// (several, comma-separated, for a cluster). Credentials and TLS
	// settings come from the environment (authOptions).
	URL string
	// Name names the stream and the bucket (default DefaultName).
	Name string
	// Replicas is the number of copies of the stream and the bucket when
	// Open creates them (default 1; 3 on a clustered server).
	Replicas int
	// Client names this connection in the server's monitoring.
	Client string
}

// DefaultName is the queue name when none is given.
const DefaultName = "convert"

// consumerName is the durable consumer all workers share.
const consumerName = "workers"

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Sentinel errors.
var (
	// ErrUnreachable: the NATS server could not be reached, or has no
	// JetStream.
	ErrUnreachable = errors.New("queue: server unreachable")
	// ErrLeaseBusy: another worker holds the lease of an output.
	ErrLeaseBusy = errors.New("queue: the output is leased by another worker")
	// ErrLeaseLost: a worker's lease was taken over (it had stopped
	// renewing it long enough for another to take it).
	ErrLeaseLost = errors.New("queue: lease lost")
)

// Queue is an open connection to the work queue and its bucket.
type Queue struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
	name   string
	url    string

	mu          sync.Mutex
	reconnected chan struct{} // closed (and replaced) at every reconnection
}

// Open connects to the server and finds (or creates) the stream and the
// bucket. The connection reconnects by itself when the server restarts.
func Open(ctx context.Context, c Config) (*Queue, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if !validName.MatchString(c.Name) {
		return nil, fmt.Errorf("--queue-name %q: use 1..32 letters, digits, - and _", c.Name)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return nil, fmt.Errorf("--queue-replicas %d: use 1..5", c.Replicas)
	}
	if !strings.Contains(c.URL, "://") {
		return nil, fmt.Errorf("--queue %q: give the NATS server as nats://HOST:PORT", c.URL)
	}
	q := &Queue{name: c.Name, url: redact(c.URL), reconnected: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(c.Client), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second), nats.ReconnectBufSize(8 << 20),
		// Errors of the connection's own goroutines are seen by the calls
		// that fail; nothing is printed behind the caller's back.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.ReconnectHandler(func(*nats.Conn) {
			q.mu.Lock()
			close(q.reconnected)
			q.reconnected = make(chan struct{})
			q.mu.Unlock()
		}),
	}
	auth, err := authOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, redact(c.URL), err)
	}
	q.nc = nc
	if err := q.setup(ctx, c.Replicas); err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

// redact drops a password from a URL for messages.
func redact(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.LastIndex(u[i+3:], "@"); j >= 0 {
			return u[:i+3] + "***@" + u[i+3+j+1:]
		}
	}
	return u
}

func (q *Queue) setup(ctx context.Context, replicas int) error {
	js, err := jetstream.New(q.nc)
	if err != nil {
		return err
	}
	q.js = js
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("%w: %s has no JetStream: start nats-server with -js (and a storage folder, -sd DIR)", ErrUnreachable, q.url)
		}
		return fmt.Errorf("%w: %s: %w", ErrUnreachable, q.url, err)
	}
	q.stream, err = js.Stream(ctx, q.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		q.stream, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        q.name,
			Description: "convert: disks to convert, one message a disk (convert batch --queue, convert worker)",
			Subjects:    []string{q.name + ".disk.*"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			// One message per disk: a resubmission of a disk still queued
			// or running is refused by the server itself.
			MaxMsgsPerSubject:    1,
			Discard:              jetstream.DiscardNew,
			DiscardNewPerSubject: true,
			Duplicates:           10 * time.Minute,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			q.stream, err = js.Stream(ctx, q.name) // another node made it first
		}
	}
	if err != nil {
		return fmt.Errorf("queue %s: the stream: %w", q.name, err)
	}
	q.kv, err = js.KeyValue(ctx, q.name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		q.kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      q.name,
			Description: "convert: status of every disk, batch bookkeeping, upload resume state, leases",
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			History:     1,
		})
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			q.kv, err = js.KeyValue(ctx, q.name)
		}
	}
	if err != nil {
		return fmt.Errorf("queue %s: the key-value bucket: %w", q.name, err)
	}
	return nil
}

// Close closes the connection (after flushing what it still holds).
func (q *Queue) Close() {
	if q.nc != nil {
		q.nc.Drain()
		q.nc.Close()
	}
}

// Reconnected is closed when the connection comes back after a loss (the
// server restarted): watches are then made anew.
func (q *Queue) Reconnected() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reconnected
}

// Where names the queue in messages: its bucket and server.
func (q *Queue) Where() string { return fmt.Sprintf("KV bucket %s at %s", q.name, q.url) }

// Store is the queue's bucket as a kv.Store.
func (q *Queue) Store() *Bucket { return &Bucket{kv: q.kv, js: q.js} }

// subject is the subject of a disk's message.
func (q *Queue) subject(key string) string { return q.name + ".disk." + key }

// opCtx bounds one call to the server when ctx has no deadline: while the
// server restarts, calls fail after a while instead of hanging.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, 10*time.Second)
}
