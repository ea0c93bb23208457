package upload

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"slices"

	"golang.org/x/sync/errgroup"
)

// multipartETag is the ETag S3 gives a completed multipart object: the MD5
// of the parts' MD5s, a dash, the number of parts.
func (t *Target) multipartETag() string {
	h := md5.New()
	for num := int32(1); num <= t.g.numParts(); num++ {
		s := t.parts.parts[num].md5
		h.Write(s[:])
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), t.g.numParts())
}

// complete completes the upload once every part is there, checks the
// object's size (and with Verify its bytes), drops the zero object and
// the state, and makes the report.
func (t *Target) complete(ctx context.Context) error {
	n := t.g.numParts()
	etags := make([]string, 0, n)
	for num := int32(1); num <= n; num++ {
		p, ok := t.parts.parts[num]
		if !ok {
			return fmt.Errorf("upload: part %d was never sent", num)
		}
		etags = append(etags, hex.EncodeToString(p.md5[:]))
	}
	want := t.multipartETag()
	if err := t.recordCompleting(ctx, want); err != nil {
		return fail("completing the upload", t.key, 0, err)
	}
	if err := t.fence(ctx); err != nil {
		return fail("completing the upload", t.key, 0, err)
	}
	t.steps.begin(StepCompleting, 0, 0)
	etag, err := t.s.Complete(ctx, t.key, t.uploadID, etags)
	if err != nil {
		// A retried Complete whose first attempt went through finds the
		// upload gone: the object, if it has the right ETag, is ours.
		if apiCode(err) != "NoSuchUpload" {
			return fail("completing the upload", t.key, 0, err)
		}
		h, herr := t.s.Head(ctx, t.key)
		if herr != nil || h.ETag != want {
			return fail("completing the upload", t.key, 0, err)
		}
		etag = want
	}
	t.completed = true
	if etag != want {
		t.log(fmt.Sprintf("the store's ETag for the object is %s, S3 would give %s: the per-part checks passed, so going on", etag, want))
	}
	t.steps.begin(StepChecking, 0, 0)
	h, err := t.s.Head(ctx, t.key)
	if err != nil {
		return fail("checking the object", t.key, 0, err)
	}
	if h.Size != t.g.pos {
		return fmt.Errorf("the object is %d bytes, %d were uploaded", h.Size, t.g.pos)
	}
	verified := false
	if t.o.Verify {
		if err := t.verify(ctx); err != nil {
			return err
		}
		verified = true
	}
	t.done = true
	t.zero.drop(ctx, len(t.parts.existing) > 0)
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
	nums := make([]int32, 0, len(t.parts.parts))
	for num := range t.parts.parts {
		nums = append(nums, num)
	}
	slices.Sort(nums)
	t.steps.begin(StepVerifying, 0, t.g.pos)
	for _, num := range nums {
		p := t.parts.parts[num]
		off := t.g.partStart(num)
		g.Go(func() error {
			body, _, err := t.s.Get(vctx, t.key, off, p.size, "")
			if err != nil {
				cancel()
				return fail("verifying", t.key, num, err)
			}
			defer body.Close()
			h := md5.New()
			n, err := io.Copy(h, t.steps.reader(StepVerifying, body))
			if err != nil {
				cancel()
				return fail("verifying", t.key, num, err)
			}
			if n != p.size || !bytes.Equal(h.Sum(nil), p.md5[:]) {
				cancel()
				return fail("verifying", t.key, num, fmt.Errorf("the object's bytes %d..%d differ from what was sent", off, off+p.size-1))
			}
			return nil
		})
	}
	return g.Wait()
}
