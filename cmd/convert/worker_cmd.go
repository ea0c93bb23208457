package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"vmimport/batch"
	"vmimport/job"
	"vmimport/queue"
)

const workerLong = `Takes disks from a NATS JetStream work queue (filled by convert batch
MANIFEST --queue) and converts them, --jobs at a time under one --memory
budget, each as the local batch would: a disk done before from the same
source with the same settings is skipped, an upload left by a worker that
died is resumed. Status, progress and results go into the queue's
key-value bucket (convert batch status, convert batch --wait).

While a disk runs, the worker tells the server every few seconds that it is
still at work, so a disk never times out however large; a worker that dies
(kill -9, power loss) stops doing so, and after --ack-wait the disk goes to
another worker, which continues its multipart upload from the state kept in
the bucket. A lease per output (renewed by its holder, taken over only once
the server's clock says it expired) keeps two workers from writing one
output at once. A disk that fails for a reason worth a retry (network,
server) goes back to the queue with a growing delay, --max-deliveries times
at most; a broken image or a bad setting fails at once, and for good.

Credentials and endpoints come from the worker's own environment (the AWS
chain, JDCLOUD_ACCESS_KEY_ID, ...); sources and file outputs are read and
written at the paths the manifest gave (shared storage).

` + limitsHelp + `

--metrics-addr :9090 serves Prometheus metrics on /metrics, /healthz (the
liveness probe) and /readyz (ready while connected to the queue);
--log-format json writes one JSON record per event of a disk on stderr.

SIGTERM or SIGINT: no new disk; the running ones get --drain-timeout to
finish, the others go back to the queue (their uploads kept for the next
worker); exit 0.`

func newWorkerCmd() *cobra.Command {
	var qo queueOptions
	var memory string
	var o queue.WorkerOptions
	var lf limitFlags
	var ob observeOptions
	c := &cobra.Command{
		Use:     "worker --queue nats://HOST:PORT",
		Short:   "convert disks from a work queue, on this node",
		Long:    workerLong,
		Example: "  convert worker --queue nats://queue.example:4222 --jobs 3 --memory 4G",
		Args:    exactArgs(0, "worker takes no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			o.Log = stderrLog(c.ErrOrStderr())
			o.Limits = lf.limits()
			return runWorker(c.Context(), &qo, memory, o, &ob, c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupQueue, func() { qo.register(fs) })
	flagGroup(fs, groupBatch, func() {
		fs.IntVar(&o.Jobs, "jobs", batch.DefaultJobs, "disks converted at once")
		fs.StringVar(&memory, "memory", "1G", "memory budget of all running disks together (blocks in flight and upload parts); a disk waits for its share")
		fs.DurationVar(&o.AckWait, "ack-wait", queue.DefaultAckWait, "how long the server waits for a sign of life from a disk's worker before giving the disk to another (shared by all workers: the last started sets it)")
		fs.IntVar(&o.MaxDeliveries, "max-deliveries", queue.DefaultMaxDeliveries, "deliveries of a disk at most: a disk whose worker died, or that failed for a reason worth a retry, that many times fails for good")
		fs.DurationVar(&o.RetryDelay, "retry-delay", queue.DefaultRetryDelay, "wait before the first retry of a disk that failed for a reason worth a retry; doubles with every delivery, up to 5m")
		fs.DurationVar(&o.DrainTimeout, "drain-timeout", queue.DefaultDrainTimeout, "on SIGTERM, how long the running disks may go on before they go back to the queue")
		fs.StringVar(&o.Name, "name", "", "this worker's name in statuses and leases (default HOST-PID)")
		fs.BoolVar(&o.ShareLinks, "share-links", false, "keep the presigned download links of the disks done in the queue's statuses (batch status --json, batch --wait), which everyone who can read the queue sees; without it they are left out (convert import signs a fresh one)")
		fs.DurationVar(&o.ProgressEvery, "progress-interval", DefaultProgressInterval, "log each running disk's progress (phase, bytes, rate) every this long (0: never)")
	})
	flagGroup(fs, groupTrust, func() { lf.register(fs) })
	ob.register(fs)
	return c
}

func runWorker(ctx context.Context, qo *queueOptions, memory string, o queue.WorkerOptions, ob *observeOptions, stderr io.Writer) (err error) {
	if o.Memory, err = parseSize(memory); err != nil {
		return usageError{fmt.Errorf("--memory: %w", err)}
	}
	if o.AckWait < time.Second {
		return usageError{fmt.Errorf("--ack-wait %s: give at least 1s", o.AckWait)}
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(o.Memory + 40<<20)
	}
	// Ready once the worker takes disks, while its connection is up.
	var taking atomic.Bool
	var q *queue.Queue
	var qp atomic.Pointer[queue.Queue]
	t, err := ob.start("convert worker", stderr, o.Name, func() error {
		switch q := qp.Load(); {
		case q == nil || !taking.Load():
			return errors.New("not taking disks yet")
		case !q.Connected():
			return errors.New("not connected to the queue")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer t.close()
	defer func() { err = t.told(ctx, err) }()
	o.Events, o.Ready = t.obs.Worker, taking.Store
	if t.json {
		o.Log = nil // the records say it all
	}
	if t.m != nil {
		o.Budget = job.NewBudget(o.Memory)
		t.m.WatchBudget(o.Budget)
		t.m.WatchDeliveries()
	}
	if q, err = qo.open(ctx, "convert worker"); err != nil {
		return err
	}
	defer q.Close()
	qp.Store(q)
	if t.m != nil {
		t.m.WatchQueue(q)
	}
	if err := q.Work(ctx, o); err != nil {
		return usageError{err}
	}
	return nil
}
