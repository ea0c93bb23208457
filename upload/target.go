package upload

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"vmimport/writer"
)

// Multipart limits of S3 and of the target cloud's OSS.
const (
	MinPartSize int64 = 5 << 20
	MaxPartSize int64 = 5 << 30
	MaxParts          = 10000
	// autoMinPart is the smallest part size picked automatically: fine
	// enough to copy most zero runs of a sparse disk server-side, coarse
	// enough to keep requests few.
	autoMinPart int64 = 8 << 20
	// zeroSeed is how many zeros cross the network to build the zero object;
	// the rest is copied server-side.
	zeroSeed int64 = 8 << 20
)

// PlanPartSize picks the part size for an output of at most sizeHint bytes:
// the smallest power of two from 8 MiB up with which 10,000 parts suffice
// (64 MiB for 500 GiB). A non-zero override is checked instead.
func PlanPartSize(sizeHint, override int64) (int64, error) {
	if sizeHint < 0 {
		return 0, fmt.Errorf("negative size %d", sizeHint)
	}
	if override != 0 {
		if override < MinPartSize || override > MaxPartSize {
			return 0, fmt.Errorf("part size %d: must be between 5 MiB and 5 GiB", override)
		}
		if n := (sizeHint + override - 1) / override; n > MaxParts {
			need, _ := PlanPartSize(sizeHint, 0)
			return 0, fmt.Errorf("part size %d MiB: an output of up to %d MiB needs %d parts, more than the 10,000 allowed; use at least %d MiB", override>>20, sizeHint>>20, n, need>>20)
		}
		return override, nil
	}
	p := autoMinPart
	for sizeHint > p*MaxParts {
		p *= 2
	}
	if p > MaxPartSize {
		return 0, fmt.Errorf("an output of %d GiB does not fit in 10,000 parts of 5 GiB", sizeHint>>30)
	}
	return p, nil
}

// Options describe one upload.
type Options struct {
	Bucket, Key string
	// SizeHint is the largest the output can be (the virtual size for RAW,
	// a bound on the QCOW2 file for QCOW2): it fixes the part grid.
	SizeHint int64
	// PartSize overrides the planned part size (0: plan it).
	PartSize int64
	// Concurrency is the number of parts in flight (default 8). Memory holds
	// at most Concurrency+2 parts.
	Concurrency int
	// StateFile records the upload for --resume (empty: DefaultStateFile).
	StateFile string
	// State, if set, records the upload instead of StateFile (a key of a
	// kv.Store shared by the nodes of a queue: KVState).
	State StateStore
	// Resume continues the upload recorded in the state, if any.
	Resume bool
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
}

// ErrUploadExists is returned when an interrupted upload to the same
// destination is recorded and --resume was not given.
var ErrUploadExists = errors.New("an interrupted upload to this object exists")

var errCopyRefused = errors.New("the store refuses UploadPartCopy")

// how a part got to the store.
const (
	partSent   = 'S'
	partCopied = 'C'
	partReused = 'R'
)

type partInfo struct {
	md5  [16]byte
	size int64
	how  byte
}

type job struct {
	num    int32
	buf    []byte // nil for a part of zeros
	n      int64
	pooled bool
}

// Target is a writer.Target that streams the output into a multipart upload.
type Target struct {
	c        *Client
	o        Options
	bucket   string
	key      string
	uploadID string
	zeroKey  string
	partSize int64
	state    StateStore
	st       *state
	log      func(string)

	gctx   context.Context
	cancel context.CancelCauseFunc
	g      errgroup.Group
	jobs   chan job
	free   chan []byte

	// Used by the goroutine calling Write, Skip, Commit and Abort.
	allocated int
	pos       int64  // bytes of output so far
	cur       []byte // buffer of the part being filled; nil while it is all zeros
	fill      int64  // bytes of the current part so far
	head      []byte // part 1, held until Commit
	headLen   int64
	headSeen  bool
	closed    bool
	done      bool
	completed bool
	report    *Report

	mu       sync.Mutex
	parts    map[int32]partInfo
	existing map[int32]types.Part
	zeroSums map[int64][16]byte

	zmu       sync.Mutex
	zeroTried bool // building the zero object began: it may exist
	zeroReady bool
	zeroErr   error
	refused   atomic.Bool

	// finished: the recorded upload was completed by an earlier run that
	// stopped before its cleanup; Commit only finishes that (finish.go).
	finished bool
	// objectETag and verifiedEarlier describe the object then found.
	objectETag      string
	verifiedEarlier bool

	sent atomic.Int64
	// stored counts the bytes of parts in the store (sent, copied, found).
	stored atomic.Int64
	steps  stepper
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
	partSize, err := PlanPartSize(o.SizeHint, o.PartSize)
	if err != nil {
		return nil, err
	}
	store := o.State
	if store == nil {
		path := o.StateFile
		if path == "" {
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
		c: c, o: o, bucket: o.Bucket, key: o.Key, partSize: partSize, state: store, log: logf,
		parts: map[int32]partInfo{}, existing: map[int32]types.Part{}, zeroSums: map[int64][16]byte{},
		steps: stepper{f: o.Steps},
	}
	if err := t.findRecorded(ctx); err != nil {
		return nil, err
	}
	if t.finished {
		// Completed by the run before: Commit only cleans up.
		t.zeroKey = t.st.ZeroKey
		return t, nil
	}
	if t.uploadID == "" {
		cr, err := c.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
			Bucket: aws.String(t.bucket), Key: aws.String(t.key), ContentType: aws.String("application/octet-stream"),
			Metadata: o.Metadata,
		})
		if err != nil {
			return nil, fmt.Errorf("starting the upload to s3://%s/%s: %s", t.bucket, t.key, short(err))
		}
		t.uploadID = aws.ToString(cr.UploadId)
		t.st = &state{
			Version: stateVersion, Endpoint: endpointName(c), Bucket: t.bucket, Key: t.key, UploadID: t.uploadID,
			PartSize: t.partSize, SizeHint: o.SizeHint, Output: o.Output, Source: o.Source,
			ZeroKey: zeroKeyFor(t.key, t.uploadID), Started: time.Now().UTC(), Resumable: o.Keep,
		}
		if err := t.st.save(ctx, store); err != nil {
			t.abortUpload(ctx)
			return nil, fmt.Errorf("recording the upload in %s: %w", store.Name(), err)
		}
	}
	t.zeroKey = t.st.ZeroKey
	t.gctx, t.cancel = context.WithCancelCause(ctx)
	t.jobs = make(chan job)
	t.free = make(chan []byte, o.Concurrency+1)
	t.g.SetLimit(o.Concurrency)
	for range o.Concurrency {
		t.g.Go(t.worker)
	}
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
	return key + ".convert-zeros-" + hex.EncodeToString(sum[:6])
}

// findRecorded looks at the state file: with Resume it adopts the recorded
// upload and lists its parts; without, it refuses to start over a live one.
func (t *Target) findRecorded(ctx context.Context) error {
	st, err := loadState(ctx, t.state)
	if errors.Is(err, os.ErrNotExist) {
		if t.o.Resume {
			t.log(fmt.Sprintf("no interrupted upload recorded for s3://%s/%s: starting a new one", t.bucket, t.key))
		}
		return nil
	}
	if err != nil {
		return err
	}
	if st.Bucket != t.bucket || st.Key != t.key || st.Endpoint != endpointName(t.c) {
		return fmt.Errorf("state file %s records an upload to s3://%s/%s at %s, not this one: give another --state-file", t.state.Name(), st.Bucket, st.Key, st.Endpoint)
	}
	parts, err := t.listParts(ctx, st.UploadID)
	if apiCode(err) == "NoSuchUpload" || httpStatus(err) == http.StatusNotFound {
		if st.Completing != nil {
			// Completed, maybe by the run that recorded it, which was
			// stopped before its cleanup: see finish.go.
			return t.adoptCompleted(ctx, st)
		}
		// Completed or aborted since: the record is stale.
		t.log(fmt.Sprintf("the recorded upload %s no longer exists: starting a new one", st.UploadID))
		return t.state.Remove(ctx)
	}
	if err != nil {
		return fmt.Errorf("listing the parts of the recorded upload %s: %s", st.UploadID, short(err))
	}
	if !t.o.Resume {
		return fmt.Errorf("%w: s3://%s/%s, upload id %s, started %s, %d parts there (recorded in %s): add --resume to continue it, or run `convert uploads abort s3://%s/%s` to drop it",
			ErrUploadExists, t.bucket, t.key, st.UploadID, st.Started.Format(time.RFC3339), len(parts), t.state.Name(), t.bucket, t.key)
	}
	if st.Output != t.o.Output {
		return fmt.Errorf("cannot resume upload %s: it was started for output %q, this run makes %q", st.UploadID, st.Output, t.o.Output)
	}
	if err := sameSource(st.Source, t.o.Source); err != nil {
		return fmt.Errorf("cannot resume upload %s: %w; drop it with `convert uploads abort s3://%s/%s`", st.UploadID, err, t.bucket, t.key)
	}
	if t.o.PartSize != 0 && t.o.PartSize != st.PartSize {
		return fmt.Errorf("cannot resume upload %s with --part-size %d: it was started with parts of %d bytes", st.UploadID, t.o.PartSize, st.PartSize)
	}
	if _, err := PlanPartSize(t.o.SizeHint, st.PartSize); err != nil {
		return fmt.Errorf("cannot resume upload %s: %w", st.UploadID, err)
	}
	t.partSize = st.PartSize
	t.uploadID = st.UploadID
	t.st = st
	if !st.Resumable {
		st.Resumable = true
		if err := st.save(ctx, t.state); err != nil {
			return err
		}
	}
	for _, p := range parts {
		t.existing[aws.ToInt32(p.PartNumber)] = p
	}
	t.log(fmt.Sprintf("resuming upload %s of s3://%s/%s: %d parts already there, checked against the source as it is read again", t.uploadID, t.bucket, t.key, len(parts)))
	return nil
}

// listParts lists every part of an upload, 1,000 a page.
func (t *Target) listParts(ctx context.Context, uploadID string) ([]types.Part, error) {
	var all []types.Part
	p := s3.NewListPartsPaginator(t.c.S3, &s3.ListPartsInput{
		Bucket: aws.String(t.bucket), Key: aws.String(t.key), UploadId: aws.String(uploadID), MaxParts: aws.Int32(1000),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Parts...)
	}
	return all, nil
}

// UploadID is the id of the multipart upload.
func (t *Target) UploadID() string { return t.uploadID }

// PartSize is the size of every part but the last.
func (t *Target) PartSize() int64 { return t.partSize }

// StateFile says where the upload is recorded until it completes.
func (t *Target) StateFile() string { return t.state.Name() }

// SentBytes is the number of part bytes sent so far (copied parts excluded).
func (t *Target) SentBytes() int64 { return t.sent.Load() }

func (t *Target) failed() error {
	if err := context.Cause(t.gctx); err != nil {
		return err
	}
	return nil
}

func (t *Target) usable() error {
	if t.done || t.closed {
		return errors.New("upload: write after the upload finished")
	}
	return t.failed()
}

// partNum is the number of the part being filled.
func (t *Target) partNum() int64 { return (t.pos-t.fill)/t.partSize + 1 }

// buffer returns a part buffer: part 1 has its own (it is held until
// Commit); the others come from a pool of Concurrency+1.
func (t *Target) buffer() ([]byte, error) {
	if t.partNum() == 1 {
		return make([]byte, t.partSize), nil
	}
	select {
	case b := <-t.free:
		return b, nil
	default:
	}
	if t.allocated < cap(t.free) {
		t.allocated++
		return make([]byte, t.partSize), nil
	}
	select {
	case b := <-t.free:
		return b, nil
	case <-t.gctx.Done():
		return nil, t.failed()
	}
}

// Write appends p.
func (t *Target) Write(p []byte) (int, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if t.partNum() > MaxParts {
			return n, t.tooBig()
		}
		if t.cur == nil {
			b, err := t.buffer()
			if err != nil {
				return n, err
			}
			clear(b[:t.fill])
			t.cur = b
		}
		k := copy(t.cur[t.fill:t.partSize], p)
		t.fill += int64(k)
		t.pos += int64(k)
		p = p[k:]
		n += k
		if t.fill == t.partSize {
			if err := t.endPart(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
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
	for n > 0 {
		if t.partNum() > MaxParts {
			return t.tooBig()
		}
		k := min(n, t.partSize-t.fill)
		if t.cur != nil {
			clear(t.cur[t.fill : t.fill+k])
		}
		t.fill += k
		t.pos += k
		n -= k
		if t.fill == t.partSize {
			if err := t.endPart(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *Target) tooBig() error {
	return fmt.Errorf("upload: the output passed %d parts of %d MiB (planned for at most %d MiB): the size hint was too small", MaxParts, t.partSize>>20, t.o.SizeHint>>20)
}

// endPart hands the filled (or, at the end, last) part on: part 1 is kept,
// the others go to the workers.
func (t *Target) endPart() error {
	num := t.partNum()
	b, n := t.cur, t.fill
	t.cur, t.fill = nil, 0
	if num == 1 {
		t.head, t.headLen, t.headSeen = b, n, true
		return nil
	}
	return t.dispatch(job{num: int32(num), buf: b, n: n, pooled: true})
}

func (t *Target) dispatch(j job) error {
	select {
	case t.jobs <- j:
		return nil
	case <-t.gctx.Done():
		return t.failed()
	}
}

func (t *Target) worker() error {
	for j := range t.jobs {
		var err error
		if t.gctx.Err() == nil {
			err = t.sendPart(t.gctx, j)
		}
		if j.buf != nil && j.pooled {
			t.free <- j.buf // the pool has room for every buffer
		}
		if err != nil {
			t.cancel(err)
			return err
		}
	}
	return nil
}

// zeroSum is the MD5 of n zero bytes, computed once per length.
func (t *Target) zeroSum(n int64) [16]byte {
	t.mu.Lock()
	s, ok := t.zeroSums[n]
	t.mu.Unlock()
	if ok {
		return s
	}
	h := md5.New()
	io.Copy(h, &zeroReader{n: n})
	copy(s[:], h.Sum(nil))
	t.mu.Lock()
	t.zeroSums[n] = s
	t.mu.Unlock()
	return s
}

func (t *Target) record(num int32, sum [16]byte, n int64, how byte) {
	t.mu.Lock()
	t.parts[num] = partInfo{md5: sum, size: n, how: how}
	t.mu.Unlock()
	t.stored.Add(n)
	t.steps.add(StepUploading, n)
}

func trimETag(s *string) string { return strings.ToLower(strings.Trim(aws.ToString(s), `"`)) }

// sendPart makes part j exist in the upload: already there with the same
// MD5 (resume), copied from the zero object, or sent.
func (t *Target) sendPart(ctx context.Context, j job) error {
	var sum [16]byte
	if j.buf == nil {
		sum = t.zeroSum(j.n)
	} else {
		sum = md5.Sum(j.buf[:j.n])
	}
	want := hex.EncodeToString(sum[:])
	if p, ok := t.existing[j.num]; ok && trimETag(p.ETag) == want && aws.ToInt64(p.Size) == j.n {
		t.record(j.num, sum, j.n, partReused)
		return nil
	}
	if j.buf == nil && j.n > 0 && !t.o.NoZeroCopy && !t.refused.Load() {
		err := t.copyZeros(ctx, j.num, j.n, want)
		if err == nil {
			t.record(j.num, sum, j.n, partCopied)
			return nil
		}
		if !errors.Is(err, errCopyRefused) {
			return err
		}
	}
	var body io.ReadSeeker
	if j.buf == nil {
		body = &zeroReader{n: j.n}
	} else {
		body = bytes.NewReader(j.buf[:j.n])
	}
	out, err := t.c.S3.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(t.bucket), Key: aws.String(t.key), UploadId: aws.String(t.uploadID),
		PartNumber: aws.Int32(j.num), Body: body, ContentLength: aws.Int64(j.n),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	})
	if err != nil {
		return fmt.Errorf("uploading part %d: %s", j.num, short(err))
	}
	if got := trimETag(out.ETag); got != want {
		return fmt.Errorf("uploading part %d: the store answered ETag %q, but the MD5 of the bytes sent is %s", j.num, got, want)
	}
	t.sent.Add(j.n)
	t.record(j.num, sum, j.n, partSent)
	return nil
}

// copySource is the x-amz-copy-source value of bucket/key.
func copySource(bucket, key string) string {
	return (&url.URL{Path: bucket + "/" + key}).EscapedPath()
}

// refusal tells whether an error of UploadPartCopy means the store does
// not do it (rather than a failure worth reporting).
func refusal(err error) bool {
	switch httpStatus(err) {
	case http.StatusNotImplemented, http.StatusMethodNotAllowed, http.StatusForbidden, http.StatusBadRequest:
		return true
	}
	switch apiCode(err) {
	case "NotImplemented", "NotSupported", "MethodNotAllowed":
		return true
	}
	return false
}

func (t *Target) refuse(err error) {
	if !t.refused.Swap(true) {
		t.log(fmt.Sprintf("the store refuses server-side copies (%s): sending zero parts as bytes", short(err)))
	}
}

// copyZeros makes part num a copy of the first n bytes of the zero object.
func (t *Target) copyZeros(ctx context.Context, num int32, n int64, want string) error {
	if err := t.ensureZero(ctx); err != nil {
		return err
	}
	out, err := t.c.S3.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket: aws.String(t.bucket), Key: aws.String(t.key), UploadId: aws.String(t.uploadID), PartNumber: aws.Int32(num),
		CopySource: aws.String(copySource(t.bucket, t.zeroKey)), CopySourceRange: aws.String(fmt.Sprintf("bytes=0-%d", n-1)),
	})
	if err != nil {
		if refusal(err) {
			t.refuse(err)
			return errCopyRefused
		}
		return fmt.Errorf("copying zeros into part %d: %s", num, short(err))
	}
	if out.CopyPartResult != nil {
		if got := trimETag(out.CopyPartResult.ETag); got != want {
			return fmt.Errorf("copying zeros into part %d: the store answered ETag %q, the MD5 of %d zeros is %s", num, got, n, want)
		}
	}
	return nil
}

// ensureZero builds the zero object once: zeroSeed bytes of zeros cross the
// network, the rest of a part's worth is copied from them server-side.
func (t *Target) ensureZero(ctx context.Context) error {
	t.zmu.Lock()
	defer t.zmu.Unlock()
	if t.zeroReady {
		return nil
	}
	if t.zeroErr != nil {
		return t.zeroErr
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	t.zeroTried = true
	// The build is not cut short by an abort: a request cancelled on our
	// side may still land on the server after the abort deleted the zero
	// object. It is short (one seed, a few copies), so it is let finish.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := t.buildZero(bctx)
	switch {
	case err == nil:
		t.zeroReady = true
	case errors.Is(err, errCopyRefused):
		t.zeroErr = err
	}
	return err
}

func (t *Target) buildZero(ctx context.Context) error {
	size := t.partSize
	if h, err := t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(t.zeroKey)}); err == nil && aws.ToInt64(h.ContentLength) == size {
		return nil // left by the run being resumed
	}
	seed := min(size, zeroSeed)
	seedKey := t.zeroKey
	if seed < size {
		seedKey += ".seed"
	}
	sum := t.zeroSum(seed)
	if _, err := t.c.S3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(t.bucket), Key: aws.String(seedKey), Body: &zeroReader{n: seed}, ContentLength: aws.Int64(seed),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	}); err != nil {
		return fmt.Errorf("writing the zero object %s: %s", seedKey, short(err))
	}
	t.sent.Add(seed)
	if seed == size {
		return nil
	}
	defer t.deleteObject(context.WithoutCancel(ctx), seedKey)
	cr, err := t.c.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(t.bucket), Key: aws.String(t.zeroKey)})
	if err != nil {
		return fmt.Errorf("building the zero object: %s", short(err))
	}
	id := cr.UploadId
	abort := func() {
		t.c.S3.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: aws.String(t.bucket), Key: aws.String(t.zeroKey), UploadId: id})
	}
	var done []types.CompletedPart
	for off, num := int64(0), int32(1); off < size; off, num = off+seed, num+1 {
		n := min(seed, size-off)
		out, err := t.c.S3.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket: aws.String(t.bucket), Key: aws.String(t.zeroKey), UploadId: id, PartNumber: aws.Int32(num),
			CopySource: aws.String(copySource(t.bucket, seedKey)), CopySourceRange: aws.String(fmt.Sprintf("bytes=0-%d", n-1)),
		})
		if err != nil {
			abort()
			if refusal(err) {
				t.refuse(err)
				return errCopyRefused
			}
			return fmt.Errorf("building the zero object: %s", short(err))
		}
		var etag *string
		if out.CopyPartResult != nil {
			etag = out.CopyPartResult.ETag
		}
		done = append(done, types.CompletedPart{PartNumber: aws.Int32(num), ETag: etag})
	}
	if _, err := t.c.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(t.bucket), Key: aws.String(t.zeroKey), UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done},
	}); err != nil {
		abort()
		return fmt.Errorf("building the zero object: %s", short(err))
	}
	return nil
}

func (t *Target) deleteObject(ctx context.Context, key string) error {
	_, err := t.c.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(key)})
	return err
}

// dropZero deletes the zero object, if it was made or begun, and checks
// it is gone: a build cut short by an abort may still land on the server
// after the request was cancelled.
func (t *Target) dropZero(ctx context.Context) {
	t.zmu.Lock()
	tried, ready := t.zeroTried, t.zeroReady
	t.zmu.Unlock()
	if !tried && len(t.existing) == 0 {
		return
	}
	keys := []string{t.zeroKey}
	if !ready {
		keys = append(keys, t.zeroKey+".seed")
	}
	for _, key := range keys {
		var err error
		for attempt := range 5 {
			if attempt > 0 {
				select {
				case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
				case <-ctx.Done():
				}
			}
			if err = t.deleteObject(ctx, key); err != nil && httpStatus(err) != http.StatusNotFound {
				continue
			}
			_, err = t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(key)})
			if httpStatus(err) == http.StatusNotFound {
				err = nil
				break
			}
			if err == nil {
				err = errors.New("still there after the delete")
			}
		}
		if err != nil {
			t.log(fmt.Sprintf("could not delete the zero object s3://%s/%s (%s): delete it by hand", t.bucket, key, short(err)))
		}
	}
}

// Commit patches head into part 1, sends the last parts, waits for every
// part, completes the upload and checks the object.
func (t *Target) Commit(ctx context.Context, head []byte) error {
	if t.finished {
		return t.finishRecorded(ctx)
	}
	if t.done {
		return errors.New("upload: commit after the upload finished")
	}
	if err := t.usable(); err != nil {
		return err
	}
	if t.fill > 0 || !t.headSeen {
		if err := t.endPart(); err != nil {
			return err
		}
	}
	if int64(len(head)) > t.pos {
		return fmt.Errorf("upload: head of %d bytes is longer than the output (%d bytes)", len(head), t.pos)
	}
	if int64(len(head)) > t.headLen {
		return fmt.Errorf("upload: head of %d bytes is longer than part 1 (%d bytes)", len(head), t.headLen)
	}
	if len(head) > 0 {
		if t.head == nil {
			t.head = make([]byte, t.headLen)
		}
		copy(t.head, head)
	}
	t.steps.begin(StepUploading, t.stored.Load(), t.pos)
	if err := t.dispatch(job{num: 1, buf: t.head, n: t.headLen}); err != nil {
		return err
	}
	t.head = nil
	t.closed = true
	close(t.jobs)
	if err := t.g.Wait(); err != nil {
		return err
	}
	if err := t.failed(); err != nil {
		return err
	}
	return t.complete(ctx)
}

// numParts is the number of parts of the finished output.
func (t *Target) numParts() int32 {
	return int32(max(1, (t.pos+t.partSize-1)/t.partSize))
}

// multipartETag is the ETag S3 gives a completed multipart object: the MD5
// of the parts' MD5s, a dash, the number of parts.
func (t *Target) multipartETag() string {
	h := md5.New()
	for num := int32(1); num <= t.numParts(); num++ {
		s := t.parts[num].md5
		h.Write(s[:])
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), t.numParts())
}

func (t *Target) complete(ctx context.Context) error {
	n := t.numParts()
	done := make([]types.CompletedPart, 0, n)
	for num := int32(1); num <= n; num++ {
		p, ok := t.parts[num]
		if !ok {
			return fmt.Errorf("upload: part %d was never sent", num)
		}
		done = append(done, types.CompletedPart{PartNumber: aws.Int32(num), ETag: aws.String(`"` + hex.EncodeToString(p.md5[:]) + `"`)})
	}
	want := t.multipartETag()
	t.recordCompleting(ctx, want)
	t.steps.begin(StepCompleting, 0, 0)
	out, err := t.c.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(t.bucket), Key: aws.String(t.key), UploadId: aws.String(t.uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: done},
	})
	etag := ""
	if err != nil {
		// A retried Complete whose first attempt went through finds the
		// upload gone: the object, if it has the right ETag, is ours.
		if apiCode(err) != "NoSuchUpload" {
			return fmt.Errorf("completing the upload: %s", short(err))
		}
		h, herr := t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(t.key)})
		if herr != nil || trimETag(h.ETag) != want {
			return fmt.Errorf("completing the upload: %s", short(err))
		}
		etag = want
	} else {
		etag = trimETag(out.ETag)
	}
	t.completed = true
	if etag != want {
		t.log(fmt.Sprintf("the store's ETag for the object is %s, S3 would give %s: the per-part checks passed, so going on", etag, want))
	}
	t.steps.begin(StepChecking, 0, 0)
	h, err := t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(t.key)})
	if err != nil {
		return fmt.Errorf("checking the object: %s", short(err))
	}
	if got := aws.ToInt64(h.ContentLength); got != t.pos {
		return fmt.Errorf("the object is %d bytes, %d were uploaded", got, t.pos)
	}
	verified := false
	if t.o.Verify {
		if err := t.verify(ctx); err != nil {
			return err
		}
		verified = true
	}
	t.done = true
	t.dropZero(ctx)
	if err := t.state.Remove(ctx); err != nil {
		t.log(fmt.Sprintf("could not remove the state file %s: %v", t.state.Name(), err))
	}
	t.report = t.makeReport(ctx, etag, verified)
	return nil
}

// verify reads the object back by parts, Concurrency at a time, and
// compares each with the MD5 of what was sent.
func (t *Target) verify(ctx context.Context) error {
	var g errgroup.Group
	g.SetLimit(t.o.Concurrency)
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nums := make([]int32, 0, len(t.parts))
	for num := range t.parts {
		nums = append(nums, num)
	}
	slices.Sort(nums)
	t.steps.begin(StepVerifying, 0, t.pos)
	for _, num := range nums {
		p := t.parts[num]
		off := int64(num-1) * t.partSize
		g.Go(func() error {
			out, err := t.c.S3.GetObject(vctx, &s3.GetObjectInput{
				Bucket: aws.String(t.bucket), Key: aws.String(t.key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+p.size-1)),
			})
			if err != nil {
				cancel()
				return fmt.Errorf("verifying part %d: %s", num, short(err))
			}
			defer out.Body.Close()
			h := md5.New()
			n, err := io.Copy(h, t.steps.reader(StepVerifying, out.Body))
			if err != nil {
				cancel()
				return fmt.Errorf("verifying part %d: %w", num, err)
			}
			if n != p.size || !bytes.Equal(h.Sum(nil), p.md5[:]) {
				cancel()
				return fmt.Errorf("verifying part %d: the object's bytes %d..%d differ from what was sent", num, off, off+p.size-1)
			}
			return nil
		})
	}
	return g.Wait()
}

// Abort stops the workers and aborts the upload, so that neither an object
// nor parts remain; with Resume it keeps the upload for a later --resume.
func (t *Target) Abort(ctx context.Context) error {
	if t.done || t.finished {
		return nil // a completed upload's record stays for a later --resume
	}
	t.done = true
	t.cancel(errors.New("upload: aborted"))
	if !t.closed {
		t.closed = true
		close(t.jobs)
	}
	t.g.Wait()
	if t.completed {
		// Complete went through but a check after it failed: the object
		// must not look done.
		err := t.deleteObject(ctx, t.key)
		t.dropZero(ctx)
		t.state.Remove(ctx)
		if err != nil {
			return fmt.Errorf("deleting the unverified object s3://%s/%s: %s", t.bucket, t.key, short(err))
		}
		return nil
	}
	t.dropZero(ctx)
	if t.o.Keep {
		t.log(fmt.Sprintf("kept upload %s of s3://%s/%s (recorded in %s): run the same command with --resume to continue it, or `convert uploads abort s3://%s/%s` to drop it",
			t.uploadID, t.bucket, t.key, t.state.Name(), t.bucket, t.key))
		return nil
	}
	if err := t.abortUpload(ctx); err != nil {
		return err
	}
	if err := t.dropUnconfirmed(ctx); err != nil {
		return err
	}
	return t.state.Remove(ctx)
}

// abortUpload aborts the upload and checks it is gone: S3 asks callers to
// check, since parts in flight during an abort may survive it, and a store
// busy with a failed Complete may not drop it at once.
func (t *Target) abortUpload(ctx context.Context) error {
	var err error
	settled := false
	for attempt := range 6 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(min(attempt, 3)) * time.Second):
			case <-ctx.Done():
				return fmt.Errorf("aborting upload %s: %w", t.uploadID, ctx.Err())
			}
		}
		_, err = t.c.S3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(t.bucket), Key: aws.String(t.key), UploadId: aws.String(t.uploadID),
		})
		if err != nil && apiCode(err) != "NoSuchUpload" {
			continue
		}
		var pending []Pending
		if pending, err = t.c.ListUploads(ctx, t.bucket, t.key); err != nil {
			continue
		}
		if !slices.ContainsFunc(pending, func(p Pending) bool { return p.UploadID == t.uploadID }) {
			if settled {
				return nil
			}
			// A part whose request was on its way when the abort was
			// sent may still land and bring the upload back (S3 says
			// an abort may need repeating): look once more after the
			// next pause, and abort again if it reappeared.
			settled = true
			err = nil
			continue
		}
		settled = false
		err = errors.New("the store still lists it after the abort")
	}
	if err == nil && settled {
		return nil
	}
	return fmt.Errorf("aborting upload %s of s3://%s/%s: %s (it is recorded in %s; `convert uploads abort s3://%s/%s` drops it)",
		t.uploadID, t.bucket, t.key, short(err), t.state.Name(), t.bucket, t.key)
}

// zeroReader reads n zero bytes and can seek, so that the SDK can sign and
// resend it.
type zeroReader struct{ n, off int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.off >= z.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n-z.off)
	clear(p[:k])
	z.off += k
	return int(k), nil
}

func (z *zeroReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += z.off
	case io.SeekEnd:
		off += z.n
	default:
		return 0, errors.New("zeroReader: bad whence")
	}
	if off < 0 {
		return 0, errors.New("zeroReader: negative position")
	}
	z.off = off
	return off, nil
}
