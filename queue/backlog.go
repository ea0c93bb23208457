package queue

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// Backlog is what the queue holds, as the workers' consumer counts it.
type Backlog struct {
	// Pending: messages no worker has taken yet (disks waiting).
	Pending uint64
	// AckPending: messages taken by a worker and not yet settled (disks
	// running, or held by a worker that died until --ack-wait passes).
	AckPending uint64
	// Redelivered: of those, messages delivered more than once.
	Redelivered uint64
	// Consumer: the workers' consumer exists (a worker started); without
	// it every message of the stream is Pending.
	Consumer bool
}

// Backlog asks the server for the queue's backlog: the workers'
// consumer's counts, or the stream's messages when no worker ever
// started.
func (q *Queue) Backlog(ctx context.Context) (Backlog, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	c, err := q.js.Consumer(ctx, q.name, consumerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		n, err := q.Pending(ctx)
		return Backlog{Pending: n}, err
	}
	if err != nil {
		return Backlog{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Backlog{}, err
	}
	return Backlog{Pending: info.NumPending, AckPending: uint64(info.NumAckPending), Redelivered: uint64(info.NumRedelivered), Consumer: true}, nil
}

// Connected tells whether the connection to the server is up now.
func (q *Queue) Connected() bool { return q.nc != nil && q.nc.IsConnected() }
