package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"vmimport/jdcloud"
	"vmimport/job"
	"vmimport/upload"
)

// againToken is the clientToken of an import made again after the import
// with token prev failed: another, so that the cloud makes a new import
// rather than answer with the failed one; derived from prev, so that a run
// that dies after submitting it and is run again gets that import back.
func againToken(prev string) string {
	sum := sha256.Sum256([]byte(prev + "/imported again"))
	return hex.EncodeToString(sum[:16])
}

// reimport imports again the object an earlier run uploaded whole and
// failed to import (rec), instead of converting and uploading the disk
// again: the object is still there as uploaded, from the same source with
// the same settings. It reports true when the import is left to follow
// (the disk's DiskDone then comes from follow).
func (b *runner) reimport(ctx context.Context, i int, rec *record, book *book) (deferred bool) {
	it := &b.items[i]
	oc := &b.out[i]
	spec := it.Spec
	event := func(e job.Event) { b.emit(Event{Kind: DiskEvent, Index: i, Item: it, Job: e}) }
	res := *rec.Result
	res.Import = nil
	src := rec.Source
	res.SourceID = &src // as the earlier run opened it (not kept in JSON)
	if !spec.Import.Enabled && !spec.Import.Wait {
		// The record asks for no import any more: the upload is done.
		oc.fill(&res)
		oc.Status = Done
		oc.Seconds = 0
		event(job.Event{Kind: job.Notice, Message: fmt.Sprintf("%s: uploaded whole by an earlier run, whose import failed; not imported (the disk asks for no import)", rec.Output)})
		book.record(context.WithoutCancel(ctx), oc, &res)
		return false
	}
	token := againToken(rec.ImportToken)
	if rec.ImportToken == "" && res.Upload != nil {
		token = againToken(upload.ClientToken(res.Upload.Bucket, res.Upload.Key, res.Upload.ETag))
	}
	event(job.Event{Kind: job.Notice, Message: fmt.Sprintf("%s: uploaded whole by an earlier run, whose import failed: importing it again (a new client token), not converting it again", rec.Output)})
	ttl := spec.Upload.PresignTTL
	if ttl == 0 {
		ttl = job.DefaultPresignTTL
	}
	is := spec.Import
	wait := is.Wait
	is.Wait = false // followed with the others (follow)
	im := spec.Upload.Image
	event(job.Event{Kind: job.PhaseChanged, Phase: job.Importing})
	imp, err := job.ImportObject(ctx, job.ObjectImport{
		Object: rec.Output, Store: spec.Upload.Store, Import: is, PresignTTL: ttl, ClientToken: token,
		Override: func(m *job.ImportMeta) {
			for _, f := range []struct{ dst, v *string }{
				{&m.ImageName, &im.Name}, {&m.Description, &im.Description}, {&m.OSType, &im.OSType},
				{&m.OSVersion, &im.OSVersion}, {&m.Architecture, &im.Architecture}, {&m.Platform, &im.Platform},
			} {
				if *f.v != "" {
					*f.dst = *f.v
				}
			}
		},
	}, job.ImportHooks{
		Task:    func(t jdcloud.Task) { event(job.Event{Kind: job.ImportProgress, Task: &t}) },
		Notice:  func(s string) { event(job.Event{Kind: job.Notice, Message: s}) },
		Warning: func(s string) { event(job.Event{Kind: job.Warning, Message: s}) },
	})
	res.Import = imp
	oc.fill(&res)
	oc.Seconds = 0
	if imp != nil {
		oc.Seconds = imp.Seconds
	}
	switch {
	case err == nil && wait && imp != nil && imp.TaskID != "":
		oc.Status = Done
		b.pmu.Lock()
		b.waiting = append(b.waiting, &awaited{i: i, book: book, res: &res})
		b.pmu.Unlock()
		return true
	case err == nil:
		oc.Status = Done
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		oc.Status, oc.Err, oc.Error = Cancelled, err, "cancelled: the batch was interrupted"
	default:
		if imp == nil {
			err = &job.ImportError{Err: err}
		}
		oc.Status, oc.Err, oc.Error = Failed, err, err.Error()
	}
	book.record(context.WithoutCancel(ctx), oc, &res)
	return false
}
