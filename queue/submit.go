package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"vmimport/batch"
	"vmimport/job"
	"vmimport/reader/image"
)

// message is what the queue carries of a disk: its spec and where it came
// from. A spec holds no secrets (credentials come from each worker's
// environment); prepare refuses an endpoint URL that carries some.
type message struct {
	Version   int       `json:"version"`
	Key       string    `json:"key"`
	Line      int       `json:"line,omitempty"`
	Spec      job.Spec  `json:"spec"`
	Submitted time.Time `json:"submitted"`
}

const messageVersion = 1

// Results of a submission, per disk.
const (
	// Queued: a message was published (again, for a disk that failed
	// before, whose settings or source changed, or whose message was
	// missing).
	ResultQueued = "queued"
	// AlreadyQueued, AlreadyRunning: a message for the disk is in the
	// queue already; no second one.
	ResultAlreadyQueued  = "already-queued"
	ResultAlreadyRunning = "already-running"
	// Done: the disk was done before from the same settings; not queued.
	ResultDone = "done"
)

// Submitted is what a submission did with one disk.
type Submitted struct {
	Line   int    `json:"line,omitempty"`
	Key    string `json:"key"`
	Source string `json:"source"`
	Output string `json:"output"`
	Result string `json:"result"`
	Note   string `json:"note,omitempty"`
	// Status is the disk's status after the submission.
	Status *Status `json:"-"`
	// rev is the status revision the submission left or found: --wait
	// waits for an end written after it.
	rev uint64
}

// Prepare makes a spec fit to travel to another node: paths absolute (the
// nodes share them, on shared storage; a URL stays a URL), the upload
// state in the bucket rather than a file, and no secret in an endpoint
// URL, a source URL or a header (the message carries none: the workers
// bring their own credentials). A worker checks the same again (Admit).
func Prepare(s job.Spec) (job.Spec, error) {
	var err error
	if !s.IsRemote() {
		if s.Source, err = filepath.Abs(s.Source); err != nil {
			return s, err
		}
	}
	for i, p := range s.AllowPaths {
		if image.IsURL(p) {
			continue
		}
		if s.AllowPaths[i], err = filepath.Abs(p); err != nil {
			return s, err
		}
	}
	if s.Kind() == job.ToFile {
		if s.Output, err = filepath.Abs(s.Output); err != nil {
			return s, err
		}
	}
	if s.VSphere.CAFile != "" {
		if s.VSphere.CAFile, err = filepath.Abs(s.VSphere.CAFile); err != nil {
			return s, err
		}
	}
	if err := checkPrepared(&s); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// Key is the name of a disk in the queue (the batch's key of its prepared
// spec): the same source, disk and output are the same disk whoever
// submits them.
func Key(s *job.Spec) string { return batch.Key(s) }

// Submit queues the disks of a manifest, validated (batch.Validate): one
// message each, unless the disk is queued or running already, or was done
// before with the same settings (and, where this node sees the source,
// from the same source). A disk that failed before is queued again.
func (q *Queue) Submit(ctx context.Context, items []batch.Item) ([]Submitted, error) {
	prepared := make([]batch.Item, len(items))
	for i, it := range items {
		s, err := Prepare(it.Spec)
		if err != nil {
			return nil, &batch.ItemError{Line: it.Line, Err: err}
		}
		prepared[i] = batch.Item{Line: it.Line, Spec: s}
	}
	if err := batch.Validate(prepared); err != nil {
		return nil, err
	}
	out := make([]Submitted, len(prepared))
	for i := range prepared {
		sub, err := q.submitOne(ctx, &prepared[i])
		if err != nil {
			return out[:i], fmt.Errorf("line %d: %w", prepared[i].Line, err)
		}
		out[i] = sub
	}
	return out, nil
}

func (q *Queue) submitOne(ctx context.Context, it *batch.Item) (Submitted, error) {
	key := Key(&it.Spec)
	sub := Submitted{Line: it.Line, Key: key, Source: image.Redact(it.Spec.Source), Output: it.Spec.Output}
	digest := batch.Digest(&it.Spec)
	fresh := Status{
		Key: key, Line: it.Line, Source: image.Redact(it.Spec.Source), Output: it.Spec.Output, State: Queued,
		Digest: digest, Submitted: time.Now().UTC(),
	}
	for range 5 {
		cur, rev, err := q.getStatus(ctx, key)
		if err != nil && rev == 0 {
			return sub, err
		}
		note := ""
		if cur != nil {
			switch cur.State {
			case Queued, Running:
				there, err := q.messageThere(ctx, key)
				if err != nil {
					return sub, err
				}
				if there {
					sub.Result, sub.Status, sub.rev = ResultAlreadyQueued, cur, rev
					if cur.State == Running {
						sub.Result, sub.Note = ResultAlreadyRunning, "on "+cur.Worker
					}
					return sub, nil
				}
				note = "queued again: its status said " + string(cur.State) + " but no message was left"
			case Done:
				why := ""
				if cur.Digest != digest {
					why = "queued again: its settings changed since it was done"
				} else if ok, whyNot := batch.StillDone(ctx, q.Store(), &it.Spec); !ok {
					// As the local batch: the same source, and the
					// output still there as made.
					why = "queued again: " + whyNot
				}
				if why == "" {
					sub.Result, sub.Status, sub.rev = ResultDone, cur, rev
					sub.Note = fmt.Sprintf("done at %s by %s", cur.Updated.Local().Format(time.DateTime), cur.Worker)
					return sub, nil
				}
				note = why
			case Failed:
				note = "queued again: it failed before"
				if cur.Outcome != nil && cur.Outcome.Error != "" {
					note += " (" + firstLine(cur.Outcome.Error) + ")"
				}
			}
		}
		st := fresh
		st.Note = note
		st.Updated = time.Now().UTC()
		b, _ := json.Marshal(st)
		cctx, cancel := opCtx(ctx)
		var nrev uint64
		if cur == nil && rev == 0 {
			nrev, err = q.kv.Create(cctx, statusKey(key), b)
		} else {
			nrev, err = q.kv.Update(cctx, statusKey(key), b, rev)
		}
		cancel()
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed under us: look again
		}
		if err != nil {
			return sub, fmt.Errorf("queueing %s: %w", image.Redact(it.Spec.Source), err)
		}
		if err := q.publish(ctx, it, key, nrev, st.Submitted); err != nil {
			return sub, err
		}
		sub.Result, sub.Note, sub.Status, sub.rev = ResultQueued, note, &st, nrev
		return sub, nil
	}
	return sub, fmt.Errorf("queueing %s: its status changes too fast", image.Redact(it.Spec.Source))
}

// publish sends a disk's message. Its id names the status revision that
// queued it: a publish retried after a lost answer is dropped by the
// server, and so is a second message while one for the disk is queued.
func (q *Queue) publish(ctx context.Context, it *batch.Item, key string, rev uint64, at time.Time) error {
	b, err := json.Marshal(message{Version: messageVersion, Key: key, Line: it.Line, Spec: it.Spec, Submitted: at})
	if err != nil {
		return err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	_, err = q.js.Publish(ctx, q.subject(key), b, jetstream.WithMsgID(key+"@"+strconv.FormatUint(rev, 10)), jetstream.WithExpectStream(q.name))
	if err != nil && strings.Contains(err.Error(), "maximum messages per subject") {
		return nil // one is queued already
	}
	if err != nil {
		return fmt.Errorf("queueing %s: %w", image.Redact(it.Spec.Source), err)
	}
	return nil
}

// messageThere tells whether a message for the disk is in the stream
// (queued, or delivered and not yet acknowledged).
func (q *Queue) messageThere(ctx context.Context, key string) (bool, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	_, err := q.stream.GetLastMsgForSubject(ctx, q.subject(key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking for the message of %s: %w", key, err)
	}
	return true, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
