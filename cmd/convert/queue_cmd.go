package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/batch"
	"vmimport/internal/safetext"
	"vmimport/internal/units"
	"vmimport/queue"
)

// queueOptions say which queue.
type queueOptions struct {
	url      string
	name     string
	replicas int
}

func (q *queueOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&q.url, "queue", "", "the NATS server of the work queue, nats://HOST:PORT or tls://HOST:PORT (several, comma-separated, for a cluster); credentials from NATS_CREDS, NATS_NKEY, or NATS_USER and NATS_PASSWORD; TLS from NATS_CA, NATS_CERT and NATS_KEY")
	fs.StringVar(&q.name, "queue-name", queue.DefaultName, "name of the queue: its stream and key-value bucket on the server")
	fs.IntVar(&q.replicas, "queue-replicas", 1, "copies of the stream and the bucket when this command creates them (3 on a NATS cluster)")
}

// flags names the queue on a command line, for hints.
func (q *queueOptions) flags() string {
	s := "--queue " + q.url
	if q.name != queue.DefaultName {
		s += " --queue-name " + q.name
	}
	return s
}

func (q *queueOptions) open(ctx context.Context, client string) (*queue.Queue, error) {
	if q.url == "" {
		return nil, usageError{errors.New("give the queue: --queue nats://HOST:PORT")}
	}
	return queue.Open(ctx, queue.Config{URL: q.url, Name: q.name, Replicas: q.replicas, Client: client})
}

// runQueueBatch is `convert batch MANIFEST --queue URL`: submit, and with
// --wait follow the disks to their end.
func runQueueBatch(ctx context.Context, fs *pflag.FlagSet, bo *batchOptions, qo *queueOptions, def *specOptions, name string, stdout, stderr io.Writer) (err error) {
	for _, name := range []string{"jobs", "memory", "state-dir", "no-state"} {
		if fs.Changed(name) {
			return usageError{fmt.Errorf("--%s applies to the workers under --queue (convert worker --help)", name)}
		}
	}
	if err := checkProgressMode(bo.progress); err != nil {
		return usageError{err}
	}
	items, _, err := readManifest(name, fs)
	if err != nil {
		return usageError{err}
	}
	var qp atomic.Pointer[queue.Queue]
	t, err := bo.ob.start("convert batch", stderr, hostName(), func() error {
		if q := qp.Load(); q == nil || !q.Connected() {
			return errors.New("not connected to the queue")
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer t.close()
	defer func() { err = t.told(ctx, err) }()
	stderr = bo.textOnly(t, stderr)
	q, err := qo.open(ctx, "convert batch")
	if err != nil {
		return err
	}
	defer q.Close()
	qp.Store(q)
	if t.m != nil {
		t.m.WatchQueue(q)
	}
	start := time.Now()
	subs, err := q.Submit(ctx, items)
	if err != nil {
		var ie *batch.ItemError
		if errors.As(err, &ie) {
			label := name
			if name == "-" {
				label = "stdin"
			}
			return usageError{fmt.Errorf("%s:%d: %w", label, ie.Line, ie.Err)}
		}
		return fmt.Errorf("queueing the disks: %w (those before were queued; submitting again queues none twice)", err)
	}
	t.obs.Submitted(subs)
	if !def.imp.wait {
		return printSubmitted(stdout, stderr, subs, bo.asJSON, *qo)
	}
	ui := newBatchUI(bo.progress, stderr, stdout, bo.asJSON, len(items), linesFor(bo.progress, stderr, bo.progressEvery))
	outs := q.Follow(ctx, items, subs, func(e batch.Event) { ui.event(e); t.obs.Followed(e) })
	ui.finish()
	sum := batch.Tally(outs)
	sum.Seconds = time.Since(start).Seconds()
	t.summary(sum)
	if err := bo.printSummary(stdout, stderr, outs, sum); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("wait interrupted (the disks go on in the queue: convert batch status %s): %w", qo.flags(), ctx.Err())
	}
	if !sum.OK() {
		return batchFailed{fmt.Sprintf("%d of %s failed", sum.Disks-sum.Done-sum.Skipped, disks(sum.Disks))}
	}
	return nil
}

// printSubmitted reports a submission without --wait.
func printSubmitted(stdout, stderr io.Writer, subs []queue.Submitted, asJSON bool, qo queueOptions) error {
	counts := map[string]int{}
	for _, s := range subs {
		counts[s.Result]++
	}
	if asJSON {
		e := json.NewEncoder(stdout)
		e.SetEscapeHTML(false)
		for _, s := range subs {
			if err := e.Encode(s); err != nil {
				return err
			}
		}
		return e.Encode(map[string]map[string]int{"summary": counts})
	}
	for _, s := range subs {
		line := fmt.Sprintf("%-16s %s -> %s", s.Result, s.Source, s.Output)
		if s.Note != "" {
			line += ": " + s.Note
		}
		fmt.Fprintln(stderr, line)
	}
	fmt.Fprintf(stderr, "%s: %d queued, %d already queued or running, %d done before; follow them with `convert batch status %s`\n",
		disks(len(subs)), counts[queue.ResultQueued], counts[queue.ResultAlreadyQueued]+counts[queue.ResultAlreadyRunning], counts[queue.ResultDone], qo.flags())
	return nil
}

// runBatchStatus is `convert batch status --queue URL`: every disk of the
// queue and where it stands.
func newBatchStatusCmd() *cobra.Command {
	var qo queueOptions
	var asJSON bool
	c := &cobra.Command{
		Use:   "status --queue nats://HOST:PORT",
		Short: "every disk of a work queue: queued, running (where, how far), done, failed (why)",
		Long: `Lists every disk of the NATS JetStream work queue that convert batch MANIFEST
--queue filled: queued, running (on which worker, how far), done, failed (why).
A manifest named status is given as ./status.`,
		Example: "  convert batch status --queue nats://queue.example:4222\n  convert batch status --queue nats://queue.example:4222 --json | jq -c 'select(.state==\"failed\")'",
		Args:    exactArgs(0, "batch status takes no arguments"),
		RunE: func(c *cobra.Command, args []string) error {
			return runBatchStatus(c.Context(), &qo, asJSON, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupQueue, func() { qo.register(fs) })
	flagGroup(fs, groupDisplay, func() {
		fs.BoolVar(&asJSON, "json", false, "print a JSON object per disk (its status as the queue's bucket holds it), then a summary object")
	})
	return c
}

// runBatchStatus is `convert batch status --queue URL`: every disk of the
// queue and where it stands.
func runBatchStatus(ctx context.Context, qo *queueOptions, asJSON bool, stdout, stderr io.Writer) error {
	q, err := qo.open(ctx, "convert batch status")
	if err != nil {
		return err
	}
	defer q.Close()
	all, err := q.Statuses(ctx)
	if err != nil {
		return err
	}
	pending, err := q.Pending(ctx)
	if err != nil {
		return err
	}
	counts := map[queue.State]int{}
	stale := 0
	for _, s := range all {
		counts[s.State]++
		if s.Stale {
			stale++
		}
	}
	if asJSON {
		e := json.NewEncoder(stdout)
		e.SetEscapeHTML(false)
		for _, s := range all {
			if err := e.Encode(s); err != nil {
				return err
			}
		}
		return e.Encode(map[string]any{"summary": map[string]any{
			"disks": len(all), "queued": counts[queue.Queued], "running": counts[queue.Running], "stale": stale,
			"done": counts[queue.Done], "failed": counts[queue.Failed], "messages": pending,
		}})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "state\tworker\tprogress\tupdated\tdisk")
	for _, s := range all {
		prog := ""
		switch {
		case s.State == queue.Running && s.VirtualBytes > 0:
			prog = fmt.Sprintf("%3.0f%% of %s, %s", 100*float64(s.DoneBytes)/float64(s.VirtualBytes), units.Bytes(s.VirtualBytes), s.Phase)
		case s.State == queue.Running:
			prog = s.Phase
		case s.State == queue.Done && s.Outcome != nil:
			prog = fmt.Sprintf("%s in %.1fs", units.Bytes(s.Outcome.Bytes), s.Outcome.Seconds)
			if s.Outcome.Status == batch.Skipped {
				prog = "found done"
			}
		}
		what := s.Source + " -> " + s.Output
		state := string(s.State)
		switch {
		case s.State == queue.Failed && s.Outcome != nil:
			what += ": " + s.Outcome.Error
		case s.Stale:
			state = "stale"
			what += fmt.Sprintf(": no word from worker %s since %s (killed, frozen or cut off?): after the queue's --ack-wait another worker takes the disk over", s.Worker, s.Updated.Local().Format(time.TimeOnly))
		case s.Note != "":
			what += ": " + s.Note
		}
		if s.Delivery > 1 {
			prog = strings.TrimPrefix(prog+fmt.Sprintf(" (delivery %d)", s.Delivery), " ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", state, s.Worker, prog, s.Updated.Local().Format(time.TimeOnly), firstLine(what))
	}
	tw.Flush()
	running := fmt.Sprintf("%d running", counts[queue.Running])
	if stale > 0 {
		running += fmt.Sprintf(" (%d stale)", stale)
	}
	fmt.Fprintf(stdout, "%s: %d queued, %s, %d done, %d failed; %d messages in the queue\n",
		disks(len(all)), counts[queue.Queued], running, counts[queue.Done], counts[queue.Failed], pending)
	return nil
}

// stderrLog writes a worker's lines with the time.
func stderrLog(w io.Writer) func(string) {
	return func(line string) {
		fmt.Fprintf(w, "%s %s\n", time.Now().Format("2006-01-02T15:04:05.000"), safetext.Escape(line))
	}
}
