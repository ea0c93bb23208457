package upload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"vmimport/internal/objstore"
)

// Abort stops the senders and aborts the upload, so that neither an object
// nor parts remain; with Keep it keeps the upload for a later --resume.
func (t *Target) Abort(ctx context.Context) error {
	if t.done || t.finished {
		return nil // a completed upload's record stays for a later --resume
	}
	t.done = true
	t.send.stop(errors.New("upload: aborted"))
	t.rec.stop()
	t.g.giveBack()
	if t.completed {
		// Complete went through but a check after it failed: the object
		// must not look done (unless it is another run's by now).
		if err := t.fence(ctx); err != nil {
			return fail(fmt.Sprintf("deleting the unverified object s3://%s/%s", t.bucket, t.key), t.key, 0, err)
		}
		err := t.s.Delete(ctx, t.key)
		t.zero.drop(ctx, len(t.parts.existing) > 0)
		t.state.Remove(ctx)
		if err != nil {
			return fail(fmt.Sprintf("deleting the unverified object s3://%s/%s", t.bucket, t.key), t.key, 0, err)
		}
		return nil
	}
	if t.o.Keep {
		// The zero object stays with the upload: the run that resumes it
		// copies from it, and drops it when it completes (or a later
		// abort of the upload does).
		t.rec.last(ctx, t.st)
		t.log(fmt.Sprintf("kept upload %s of s3://%s/%s (recorded in %s): run the same command with --resume to continue it, or `convert uploads abort s3://%s/%s` to drop it",
			t.uploadID, t.bucket, t.key, t.state.Name(), t.bucket, t.key))
		return nil
	}
	t.zero.drop(ctx, len(t.parts.existing) > 0)
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
// busy with a failed Complete may not drop it at once. So the abort is
// sent again, with pauses, until the upload is missing from two listings
// in a row.
func (t *Target) abortUpload(ctx context.Context) error {
	var err error
	settled := false
	for attempt := range 6 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(min(attempt, 3)) * time.Second):
			case <-ctx.Done():
				return fail("aborting upload "+t.uploadID, t.key, 0, ctx.Err())
			}
		}
		err = t.s.AbortUpload(ctx, t.key, t.uploadID)
		if err != nil && apiCode(err) != "NoSuchUpload" {
			continue
		}
		var pending []objstore.Upload
		if pending, err = t.s.ListUploads(ctx, t.key); err != nil {
			continue
		}
		if !slices.ContainsFunc(pending, func(p objstore.Upload) bool { return p.UploadID == t.uploadID }) {
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
	return fmt.Errorf("%w (it is recorded in %s; `convert uploads abort s3://%s/%s` drops it)",
		fail(fmt.Sprintf("aborting upload %s of s3://%s/%s", t.uploadID, t.bucket, t.key), t.key, 0, err), t.state.Name(), t.bucket, t.key)
}

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
	h, err := t.s.Head(ctx, t.key)
	if err != nil || h.Size != c.Size || h.ETag != c.ETag || h.Modified.Before(t.st.Started.Add(-time.Minute)) {
		return nil
	}
	if err := t.s.Delete(ctx, t.key); err != nil {
		return fail(fmt.Sprintf("deleting s3://%s/%s, completed while the run was stopping", t.bucket, t.key), t.key, 0, err)
	}
	t.log(fmt.Sprintf("deleted s3://%s/%s: the store completed it while the run was stopping", t.bucket, t.key))
	return nil
}
