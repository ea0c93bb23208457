package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

// findRecorded looks at the state file: with Resume it adopts the recorded
// upload and lists its parts; without, it refuses to start over a live one.
func (t *Target) findRecorded(ctx context.Context) error {
	st, err := loadState(ctx, t.state)
	if errors.Is(err, os.ErrNotExist) {
		if t.o.Resume && !t.o.ResumeImplied {
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
	parts, err := t.s.ListParts(ctx, t.key, st.UploadID)
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
		return fail("listing the parts of the recorded upload "+st.UploadID, t.key, 0, err)
	}
	if !t.o.Resume {
		return fmt.Errorf("%w: s3://%s/%s, upload id %s, started %s, %d parts there (recorded in %s): add --resume to continue it, or run `convert uploads abort s3://%s/%s` to drop it",
			ErrUploadExists, t.bucket, t.key, st.UploadID, st.Started.Format(time.RFC3339), len(parts), t.state.Name(), t.bucket, t.key)
	}
	if st.Output != t.o.Output {
		return cannotResume{fmt.Errorf("cannot resume upload %s: it was started for output %q, this run makes %q", st.UploadID, st.Output, t.o.Output)}
	}
	if err := sameSource(st.Source, t.o.Source); err != nil {
		return cannotResume{fmt.Errorf("cannot resume upload %s: %w; drop it with `convert uploads abort s3://%s/%s`", st.UploadID, err, t.bucket, t.key)}
	}
	if t.o.PartSizeChosen && t.o.PartSize != st.PartSize {
		return cannotResume{fmt.Errorf("cannot resume upload %s with --part-size %d: it was started with parts of %d bytes", st.UploadID, t.o.PartSize, st.PartSize)}
	}
	if err := checkPartSize(t.o.SizeHint, st.PartSize); err != nil {
		return cannotResume{fmt.Errorf("cannot resume upload %s: %w", st.UploadID, err)}
	}
	t.g.size, t.g.first = st.PartSize, st.firstPart()
	t.uploadID = st.UploadID
	t.st = st
	t.rec.recorded = st.Extra
	if !st.Resumable {
		st.Resumable = true
		if err := st.save(ctx, t.state); err != nil {
			return err
		}
	}
	for _, p := range parts {
		t.parts.existing[p.Num] = p
	}
	t.log(fmt.Sprintf("resuming upload %s of s3://%s/%s: %d parts already there, checked against the source as it is read again", t.uploadID, t.bucket, t.key, len(parts)))
	return nil
}
