package upload

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"vmimport/internal/bufpool"
	"vmimport/internal/objstore"
	"vmimport/writer"
)

// Options describe one upload.
type Options struct {
	Bucket, Key string
	// SizeHint is the largest the output can be (the virtual size for RAW,
	// a bound on the QCOW2 file for QCOW2): it fixes the part grid.
	SizeHint int64
	// PartSize is the part size, as PlanPartSize planned it for SizeHint
	// (Start only checks it). A resumed upload keeps the part size it was
	// started with.
	PartSize int64
	// PartSizeChosen says the user chose PartSize (--part-size): resuming
	// an upload started with other parts is then refused.
	PartSizeChosen bool
	// Concurrency is the number of parts in flight (default 8). Memory holds
	// at most Concurrency+1 parts and part 1 (PartMemory).
	Concurrency int
	// Buffers lends the part buffers (the process's pool, bounded by its
	// memory budget); nil: a pool of PartMemory for this upload. Every
	// buffer goes back once its part is in the store or the upload ended.
	Buffers *bufpool.Pool
	// StateFile records the upload for --resume (empty: DefaultStateFile).
	StateFile string
	// State, if set, records the upload instead of StateFile (a key of a
	// kv.Store shared by the nodes of a queue: KVState).
	State StateStore
	// Resume continues the upload recorded in the state, if any.
	Resume bool
	// ResumeImplied: Resume was not asked for by the user but by the
	// runner (a batch resumes what an earlier run left): that nothing was
	// recorded is then not told.
	ResumeImplied bool
	// Keep keeps the upload (instead of aborting it) when this run fails,
	// for a later Resume; the CLI's --resume sets both.
	Keep bool
	// Source identifies the source image; a resumed upload must have the
	// same one.
	Source SourceID
	// Output describes what shapes the output bytes ("raw", "qcow2 ..."); a
	// resumed upload must have the same.
	Output string
	// Verify reads the object back after Complete and compares every part.
	Verify bool
	// NoZeroCopy sends zero parts as bytes instead of copying them.
	NoZeroCopy bool
	// Import fills the ImportImage request of the report.
	Import ImportMeta
	// Metadata is stored with the object (x-amz-meta-*) at
	// CreateMultipartUpload: see ImportMeta.ObjectMetadata.
	Metadata map[string]string
	// Preflighted says the caller ran Client.Preflight for this bucket and
	// key already.
	Preflighted bool
	// PresignTTL is how long the presigned URL lives (default 7 days).
	PresignTTL time.Duration
	// Log receives notices and warnings, one line each. May be nil.
	Log func(string)
	// Steps, if set, hears the steps of Commit as they begin and advance
	// (steps.go), from the goroutine calling Commit and from the workers.
	Steps func(StepProgress)
	// Parts, if set, hears every part once it is in the store (sent,
	// copied or found), from the senders: for metrics and logs.
	Parts func(PartStored)
	// Fence, if set, is asked before the upload does what others may take
	// for done or share: Complete, building the zero object, deleting an
	// object it completed. An error stops the upload there (a queue
	// worker that lost its lease). State records fenced the same way (a
	// kv.Fenced store) are refused by the store itself.
	Fence func(context.Context) error
}

// Target is a writer.Target that streams the output into a multipart
// upload. It holds in memory part 1 (until Commit), the part being
// filled, and the parts in flight (Concurrency), no more: PartMemory. Its
// parts are in other files: the part grid and buffer pool (grid.go), the part senders (send.go), the zero object (zero.go), resume
// (resume.go, finish.go), complete and verify (complete.go), abort
// (abort.go); every call to the store goes through an objstore.Store (Client.Bucket).
type Target struct {
	c        *Client
	o        Options
	s        objstore.Store
	bucket   string
	key      string
	uploadID string
	state    StateStore
	st       *state
	log      func(string)

	// Used by the goroutine calling Write, Skip, Commit and Abort.
	g         grid
	send      *senders // nil for an upload completed by an earlier run
	done      bool
	completed bool
	report    *Report

	parts *partLog
	zero  *zeroObject

	// finished: the recorded upload was completed by an earlier run that
	// stopped before its cleanup; Commit only finishes that (finish.go).
	finished bool
	// objectETag and verifiedEarlier describe the object then found.
	objectETag      string
	verifiedEarlier bool

	steps stepper

	rec recorder
}

var _ writer.Target = (*Target)(nil)

// Start runs the preflight checks, then creates the multipart upload (or
// finds the one to resume) and records it in the state file. Parts start
// going up with the first writes.
func Start(ctx context.Context, c *Client, o Options) (*Target, error) {
	if o.Bucket == "" || o.Key == "" {
		return nil, errors.New("upload: no bucket or key")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.PresignTTL == 0 {
		o.PresignTTL = 7 * 24 * time.Hour
	}
	logf := o.Log
	if logf == nil {
		logf = func(string) {}
	}
	if err := checkPartSize(o.SizeHint, o.PartSize); err != nil {
		return nil, err
	}
	store := o.State
	if store == nil {
		path := o.StateFile
		if path == "" {
			var err error
			if path, err = DefaultStateFile(endpointName(c), o.Bucket, o.Key); err != nil {
				return nil, err
			}
		}
		store = FileState(path)
	}
	if !o.Preflighted {
		if err := c.Preflight(ctx, o.Bucket, o.Key); err != nil {
			return nil, err
		}
	}
	t := &Target{
		c: c, o: o, s: c.Bucket(o.Bucket), bucket: o.Bucket, key: o.Key, state: store, log: logf,
		g: grid{size: o.PartSize, first: headPart(o.PartSize), hint: o.SizeHint}, parts: newPartLog(),
		steps: stepper{f: o.Steps},
	}
	t.parts.onStored = func(n int64) { t.steps.add(StepUploading, n) }
	if err := t.findRecorded(ctx); err != nil {
		return nil, err
	}
	if t.finished {
		// Completed by the run before: Commit only cleans up.
		t.zero = t.newZero()
		return t, nil
	}
	if t.uploadID == "" {
		id, err := t.s.CreateUpload(ctx, t.key, o.Metadata)
		if err != nil {
			return nil, fail(fmt.Sprintf("starting the upload to s3://%s/%s", t.bucket, t.key), t.key, 0, err)
		}
		t.uploadID = id
		t.st = &state{
			Version: stateVersion, Endpoint: endpointName(c), Bucket: t.bucket, Key: t.key, UploadID: t.uploadID,
			PartSize: t.g.size, FirstPart: t.g.first, SizeHint: o.SizeHint, Output: o.Output, Source: o.Source,
			ZeroKey: zeroKeyFor(t.key, t.uploadID), Started: time.Now().UTC(), Resumable: o.Keep,
		}
		if err := t.st.save(ctx, store); err != nil {
			t.abortUpload(ctx)
			return nil, fmt.Errorf("recording the upload in %s: %w", store.Name(), err)
		}
	}
	t.zero = t.newZero()
	bufs := o.Buffers
	if bufs == nil {
		bufs = bufpool.New(PartMemory(t.g.size, o.Concurrency))
	}
	t.g.pool = newPool(t.g.size, o.Concurrency+1, bufs)
	t.send = startSenders(ctx, o.Concurrency, t.g.pool, t.sendPart)
	return t, nil
}

func endpointName(c *Client) string {
	if c.Endpoint != nil {
		return c.Endpoint.String()
	}
	return "aws:" + c.Region
}

func zeroKeyFor(key, uploadID string) string {
	sum := md5.Sum([]byte(uploadID))
	return key + zeroMark + hex.EncodeToString(sum[:6])
}

// UploadID is the id of the multipart upload.
func (t *Target) UploadID() string { return t.uploadID }

// StateFile says where the upload is recorded until it completes.
func (t *Target) StateFile() string { return t.state.Name() }

// Size is the size of the output so far (of the object, once completed).
func (t *Target) Size() int64 { return t.g.pos }

func (t *Target) usable() error {
	if t.done || t.send == nil || t.send.closed {
		return errors.New("upload: write after the upload finished")
	}
	return t.send.failed()
}

// Write appends p.
func (t *Target) Write(p []byte) (int, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	return t.g.write(p, t.endPart)
}

// Skip appends n zero bytes; parts that are all zeros are copied
// server-side.
func (t *Target) Skip(n int64) error {
	if n < 0 {
		return errors.New("upload: negative skip")
	}
	if err := t.usable(); err != nil {
		return err
	}
	return t.g.skip(n, t.endPart)
}

// endPart hands the filled (or, at the end, last) part on: part 1 is kept,
// the others go to the senders.
func (t *Target) endPart() error {
	num, b, n := t.g.take()
	t.rec.note(t.st)
	if num == 1 {
		t.g.head, t.g.headLen, t.g.headSeen = b, n, true
		return nil
	}
	return t.send.dispatch(job{num: int32(num), buf: b, n: n})
}

// Commit patches head into part 1, sends the last parts, waits for every
// part, completes the upload and checks the object.
func (t *Target) Commit(ctx context.Context, head []byte) error {
	t.rec.stop()
	if t.finished {
		return t.finishRecorded(ctx)
	}
	if t.done {
		return errors.New("upload: commit after the upload finished")
	}
	if err := t.usable(); err != nil {
		return err
	}
	if t.g.fill > 0 || !t.g.headSeen {
		if err := t.endPart(); err != nil {
			return err
		}
	}
	if int64(len(head)) > t.g.pos {
		return fmt.Errorf("upload: head of %d bytes is longer than the output (%d bytes)", len(head), t.g.pos)
	}
	if int64(len(head)) > t.g.headLen {
		return fmt.Errorf("upload: head of %d bytes is longer than part 1 (%d bytes)", len(head), t.g.headLen)
	}
	if len(head) > 0 {
		if t.g.head == nil {
			b, err := t.g.pool.getHead(int(t.g.headLen))
			if err != nil {
				return err
			}
			t.g.head = b
		}
		copy(t.g.head, head)
	}
	t.steps.begin(StepUploading, t.parts.stored.Load(), t.g.pos)
	j := job{num: 1, buf: t.g.head, n: t.g.headLen, head: true}
	t.g.head = nil // the sender's to give back now
	if err := t.send.dispatch(j); err != nil {
		return err
	}
	if err := t.send.close(); err != nil {
		return err
	}
	return t.complete(ctx)
}
