package upload

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"vmimport/internal/kv"
)

// A run killed between CompleteMultipartUpload and its cleanup leaves a
// complete object, its zero object (KEY.convert-zeros-*) and its state
// file, whose upload no longer exists. The state file then holds what the
// upload was completing (recordCompleting): a --resume that finds the
// object with that size and those digests only finishes the cleanup.

// recordCompleting writes the object about to be completed into the state
// file. Failing to is not fatal (the upload goes on, and a run stopped
// after Complete would only leave its zero object behind), unless the
// store refused the write because the lease it is made under is lost:
// then the upload is another run's, and this one stops.
func (t *Target) recordCompleting(ctx context.Context, etag string) error {
	c := &completing{Size: t.g.pos, ETag: etag}
	for num := int32(1); num <= t.g.numParts(); num++ {
		s := t.parts.parts[num].md5
		c.Parts = append(c.Parts, hex.EncodeToString(s[:]))
	}
	t.st.Completing = c
	err := t.st.save(ctx, t.state)
	if errors.Is(err, kv.ErrFenced) {
		return err
	}
	if err != nil {
		t.log(fmt.Sprintf("could not record the upload as completing in %s: %v", t.state.Name(), err))
	}
	return nil
}

// fence asks Options.Fence, if set, whether the upload is still this
// run's to finish.
func (t *Target) fence(ctx context.Context) error {
	if t.o.Fence == nil {
		return nil
	}
	return t.o.Fence(ctx)
}

// adoptCompleted looks at the object a recorded, completing upload made.
// If it is there as recorded and this run makes the same output from the
// same source, the run only finishes the cleanup (with --resume; without,
// it says so and stops). Otherwise the record is dropped with its zero
// object and a new upload starts.
func (t *Target) adoptCompleted(ctx context.Context, st *state) error {
	c := st.Completing
	stale := func(why string) error {
		t.log(fmt.Sprintf("the recorded upload %s was completed, but %s: starting a new one", st.UploadID, why))
		dropKeys(ctx, t.s, t.bucket, t.log, st.ZeroKey, st.ZeroKey+".seed")
		return t.state.Remove(ctx)
	}
	if st.Output != t.o.Output {
		return stale(fmt.Sprintf("it made output %q, this run makes %q", st.Output, t.o.Output))
	}
	if err := sameSource(st.Source, t.o.Source); err != nil {
		return stale(err.Error())
	}
	h, err := t.s.Head(ctx, t.key)
	if err != nil {
		if httpStatus(err) == 404 {
			return stale(fmt.Sprintf("s3://%s/%s is not there any more", t.bucket, t.key))
		}
		return fail(fmt.Sprintf("looking at s3://%s/%s, which the recorded upload %s completed", t.bucket, t.key, st.UploadID), t.key, 0, err)
	}
	if h.Size != c.Size {
		return stale(fmt.Sprintf("s3://%s/%s is %d bytes, not the %d it completed", t.bucket, t.key, h.Size, c.Size))
	}
	if !t.o.Resume {
		return fmt.Errorf("%w: s3://%s/%s was completed by upload %s (started %s), stopped before its cleanup (recorded in %s): add --resume to finish it, nothing is sent again",
			ErrUploadExists, t.bucket, t.key, st.UploadID, st.Started.Format("2006-01-02T15:04:05Z07:00"), t.state.Name())
	}
	t.uploadID, t.st, t.g.size, t.g.first, t.g.pos = st.UploadID, st, st.PartSize, st.firstPart(), c.Size
	for i, p := range c.Parts {
		var info partInfo
		if b, err := hex.DecodeString(p); err != nil || len(b) != 16 {
			return stale(fmt.Sprintf("its state file records part %d as %q", i+1, p))
		} else {
			copy(info.md5[:], b)
		}
		info.size = min(t.g.partLen(int64(i+1)), c.Size-t.g.partStart(int32(i+1)))
		info.how = partReused
		t.parts.parts[int32(i+1)] = info
	}
	if int32(len(c.Parts)) != t.g.numParts() {
		return stale(fmt.Sprintf("its state file records %d parts for %d bytes", len(c.Parts), c.Size))
	}
	t.objectETag = h.ETag
	if t.objectETag != c.ETag {
		// A store whose ETags are not S3's (or an object replaced by one
		// of the same size): read it back and compare every part.
		t.log(fmt.Sprintf("s3://%s/%s has ETag %s, not the %s recorded: reading it back to compare every part", t.bucket, t.key, t.objectETag, c.ETag))
		if err := t.verify(ctx); err != nil {
			return stale(err.Error())
		}
		t.verifiedEarlier = true
	}
	t.finished = true
	t.log(fmt.Sprintf("upload %s of s3://%s/%s was completed before the last run stopped: the object is there as recorded; finishing its cleanup", st.UploadID, t.bucket, t.key))
	return nil
}

// Completed reports whether the recorded upload was found complete: the
// conversion pass may be skipped, and Commit only cleans up.
func (t *Target) Completed() bool { return t.finished }

// finishRecorded is Commit for an upload completed by an earlier run.
func (t *Target) finishRecorded(ctx context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	verified := t.verifiedEarlier
	if t.o.Verify && !verified {
		if err := t.verify(ctx); err != nil {
			return err
		}
		verified = true
	}
	dropKeys(ctx, t.s, t.bucket, t.log, t.zero.zeroKey, t.zero.zeroKey+".seed")
	if err := t.state.Remove(ctx); err != nil {
		t.log(fmt.Sprintf("could not remove the state file %s: %v", t.state.Name(), err))
	}
	t.report = t.makeReport(ctx, t.objectETag, verified)
	return nil
}
