package upload

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// A run killed between CompleteMultipartUpload and its cleanup leaves a
// complete object, its zero object (KEY.convert-zeros-*) and its state
// file, whose upload no longer exists. The state file then holds what the
// upload was completing (recordCompleting): a --resume that finds the
// object with that size and those digests only finishes the cleanup.

// recordCompleting writes the object about to be completed into the state
// file. Failing to is not fatal: the upload goes on, and a run stopped
// after Complete would only leave its zero object behind.
func (t *Target) recordCompleting(ctx context.Context, etag string) {
	c := &completing{Size: t.pos, ETag: etag}
	for num := int32(1); num <= t.numParts(); num++ {
		s := t.parts[num].md5
		c.Parts = append(c.Parts, hex.EncodeToString(s[:]))
	}
	t.st.Completing = c
	if err := t.st.save(ctx, t.state); err != nil {
		t.log(fmt.Sprintf("could not record the upload as completing in %s: %v", t.state.Name(), err))
	}
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
		t.dropKeys(ctx, st.ZeroKey, st.ZeroKey+".seed")
		return t.state.Remove(ctx)
	}
	if st.Output != t.o.Output {
		return stale(fmt.Sprintf("it made output %q, this run makes %q", st.Output, t.o.Output))
	}
	if err := sameSource(st.Source, t.o.Source); err != nil {
		return stale(err.Error())
	}
	h, err := t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(t.key)})
	if err != nil {
		if httpStatus(err) == 404 {
			return stale(fmt.Sprintf("s3://%s/%s is not there any more", t.bucket, t.key))
		}
		return fmt.Errorf("looking at s3://%s/%s, which the recorded upload %s completed: %s", t.bucket, t.key, st.UploadID, short(err))
	}
	if got := aws.ToInt64(h.ContentLength); got != c.Size {
		return stale(fmt.Sprintf("s3://%s/%s is %d bytes, not the %d it completed", t.bucket, t.key, got, c.Size))
	}
	if !t.o.Resume {
		return fmt.Errorf("%w: s3://%s/%s was completed by upload %s (started %s), stopped before its cleanup (recorded in %s): add --resume to finish it, nothing is sent again",
			ErrUploadExists, t.bucket, t.key, st.UploadID, st.Started.Format("2006-01-02T15:04:05Z07:00"), t.state.Name())
	}
	t.uploadID, t.st, t.partSize, t.pos = st.UploadID, st, st.PartSize, c.Size
	for i, p := range c.Parts {
		var info partInfo
		if b, err := hex.DecodeString(p); err != nil || len(b) != 16 {
			return stale(fmt.Sprintf("its state file records part %d as %q", i+1, p))
		} else {
			copy(info.md5[:], b)
		}
		info.size = min(t.partSize, c.Size-int64(i)*t.partSize)
		info.how = partReused
		t.parts[int32(i+1)] = info
	}
	if int32(len(c.Parts)) != t.numParts() {
		return stale(fmt.Sprintf("its state file records %d parts for %d bytes", len(c.Parts), c.Size))
	}
	t.objectETag = trimETag(h.ETag)
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
	t.dropKeys(ctx, t.zeroKey, t.zeroKey+".seed")
	if err := t.state.Remove(ctx); err != nil {
		t.log(fmt.Sprintf("could not remove the state file %s: %v", t.state.Name(), err))
	}
	t.report = t.makeReport(ctx, t.objectETag, verified)
	return nil
}

// dropKeys deletes leftover objects of this tool, as dropZero does.
func (t *Target) dropKeys(ctx context.Context, keys ...string) {
	for _, key := range keys {
		if err := t.deleteObject(ctx, key); err != nil && httpStatus(err) != 404 {
			t.log(fmt.Sprintf("could not delete the zero object s3://%s/%s (%s): delete it by hand", t.bucket, key, short(err)))
		}
	}
}

// Size is the size of the output so far (of the object, once completed).
func (t *Target) Size() int64 { return t.pos }

// dropUnconfirmed deletes the object a Complete made whose answer never
// came (the run was interrupted or the connection dropped while the store
// completed it): an aborted run must not leave a complete-looking object.
// It is ours when it has the size and ETag the state file recorded and is
// no older than the upload (an identical object uploaded before stays).
func (t *Target) dropUnconfirmed(ctx context.Context) error {
	if t.st == nil || t.st.Completing == nil {
		return nil
	}
	c := t.st.Completing
	h, err := t.c.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(t.key)})
	if err != nil || aws.ToInt64(h.ContentLength) != c.Size || trimETag(h.ETag) != c.ETag ||
		aws.ToTime(h.LastModified).Before(t.st.Started.Add(-time.Minute)) {
		return nil
	}
	if err := t.deleteObject(ctx, t.key); err != nil {
		return fmt.Errorf("deleting s3://%s/%s, completed while the run was stopping: %s", t.bucket, t.key, short(err))
	}
	t.log(fmt.Sprintf("deleted s3://%s/%s: the store completed it while the run was stopping", t.bucket, t.key))
	return nil
}
