package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vmimport/internal/ident"
	"vmimport/internal/kv"
	"vmimport/job"
	"vmimport/upload"
)

// record is what the state keeps of a disk after a run.
type record struct {
	Version int `json:"version"`
	// Spec is the digest of the settings that shape the output.
	Spec     string          `json:"spec"`
	Source   upload.SourceID `json:"source"`
	Output   string          `json:"output"`
	OutputID outputID        `json:"output_id"`
	Status   Status          `json:"status"`
	Error    string          `json:"error,omitempty"`
	Finished time.Time       `json:"finished"`
	Result   *job.Result     `json:"result,omitempty"`
	// Uploaded: the disk failed at its import, after its upload had
	// completed: the object (OutputID) is whole, and a rerun imports it
	// again rather than convert and upload it again. ImportToken is the
	// clientToken of that import: the next uses another, since the cloud
	// answers a token with its first import (the failed one).
	Uploaded    bool   `json:"uploaded,omitempty"`
	ImportToken string `json:"import_token,omitempty"`
}

const recordVersion = 1

// outputID tells whether an output is still the one a run made: a file's
// size and modification time, an object's size and ETag.
type outputID struct {
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime,omitzero"`
	ETag  string    `json:"etag,omitempty"`
}

// book is the bookkeeping of one disk.
type book struct {
	store   kv.Store
	clients *job.Clients
	key     string
	spec    *job.Spec
	digest  string
	noLinks bool // keep presigned links out of the record
}

func (b *runner) bookkeeping(it *Item) *book {
	bk := &book{store: b.o.State, clients: b.o.Clients, spec: &it.Spec, noLinks: b.o.NoLinks}
	if bk.store == nil {
		return bk
	}
	bk.key, bk.digest = Key(&it.Spec), specDigest(&it.Spec)
	return bk
}

// Key is the name of a disk in the state: a digest of its source and
// output, so that a manifest may be reordered or grow.
func Key(s *job.Spec) string {
	src := s.SourceName()
	out, err := outputName(s)
	if err != nil {
		out = s.Output
	}
	if s.Kind() == job.ToFile {
		// A file by its identity: one file through two spellings of its
		// folder is one disk.
		if id, err := ident.File(s.Output); err == nil {
			out = strings.TrimPrefix(string(id), "file:")
		}
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%s", src, s.Disk, out)))
	return "disk-" + hex.EncodeToString(sum[:12])
}

// specDigest covers the settings that shape the output bytes: a change to
// any of them redoes the disk; a change to the others (workers, parts in
// flight, the image name) does not.
func specDigest(s *job.Spec) string {
	shape := struct {
		AllowBacking bool
		AllowPaths   []string
		Format       string
		QCOW2        job.QCOW2Spec
		DiskSizeGB   int64
		Shrink       bool
		Store        job.Store
	}{s.AllowBacking, s.AllowPaths, s.OutputFormat(), s.QCOW2, s.DiskSizeGB, s.Shrink, s.Upload.Store}
	b, _ := json.Marshal(shape)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// done returns the record of an earlier run that did this disk, with a
// word on why it counts, when the source, the settings and the output are
// all still as that run left them; nil otherwise.
func (bk *book) done(ctx context.Context) (*record, string) {
	rec, why, _ := bk.check(ctx)
	return rec, why
}

// check is done, with why not when the disk is not (or no longer) done.
func (bk *book) check(ctx context.Context) (rec *record, why, whyNot string) {
	r, whyNot := bk.load(ctx, func(r *record) bool { return r.Status == Done })
	if r == nil {
		return nil, "", whyNot
	}
	return r, fmt.Sprintf("done at %s from the same source with the same settings; %s is unchanged", r.Finished.Local().Format(time.DateTime), r.Output), ""
}

// uploaded returns the record of an earlier run that uploaded the disk
// whole and then failed to import it, when the source, the settings and
// the object are still as that run left them: the disk needs its import
// only. nil otherwise.
func (bk *book) uploaded(ctx context.Context) *record {
	r, _ := bk.load(ctx, func(r *record) bool { return r.Status == Failed && r.Uploaded })
	return r
}

// load reads the disk's record, when it is one that want takes, with the
// same settings, from the same source, and its output still there as
// made; else why not.
func (bk *book) load(ctx context.Context, want func(*record) bool) (*record, string) {
	if bk.store == nil {
		return nil, "no bookkeeping"
	}
	b, err := bk.store.Get(ctx, bk.key)
	if err != nil {
		return nil, "no record of it being done"
	}
	var r record
	switch {
	case json.Unmarshal(b, &r) != nil || r.Version != recordVersion:
		return nil, "its record is of another version"
	case !want(&r) || r.Result == nil:
		return nil, "it is not recorded done"
	case r.Spec != bk.digest:
		return nil, "its settings changed since it was done"
	}
	now, err := job.IdentifySource(ctx, bk.spec)
	if err != nil {
		return nil, fmt.Sprintf("its source could not be checked from here (%v)", err)
	}
	if r.Source.Same(now) != nil {
		return nil, "its source changed since it was done"
	}
	if !bk.outputThere(ctx, &r) {
		return nil, "its output is no longer there as it was made"
	}
	return &r, ""
}

// StillDone tells whether the disk of s is done as the bookkeeping in
// store records it, and still so: the same settings, the same source, the
// output still there as made (what a batch checks before it skips a
// disk); if not, why not. A queue's submitter asks it before it says a
// disk is done rather than queue it again.
func StillDone(ctx context.Context, store kv.Store, s *job.Spec) (bool, string) {
	bk := &book{store: store, spec: s, key: Key(s), digest: specDigest(s)}
	rec, _, whyNot := bk.check(ctx)
	return rec != nil, whyNot
}

// outputThere checks the output a record names is still the one made.
func (bk *book) outputThere(ctx context.Context, rec *record) bool {
	if strings.HasPrefix(rec.Output, "s3://") {
		size, etag, err := job.HeadObject(ctx, bk.clients, bk.spec.Upload.Store, rec.Output)
		return err == nil && size == rec.OutputID.Size && strings.EqualFold(etag, strings.Trim(rec.OutputID.ETag, `"`))
	}
	fi, err := os.Stat(rec.Output)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == rec.OutputID.Size && fi.ModTime().Equal(rec.OutputID.MTime)
}

// record keeps how the disk ended. A failure to keep it is a warning of
// the disk: the next run will then redo it.
func (bk *book) record(ctx context.Context, oc *Outcome, res *job.Result) {
	if bk.store == nil {
		return
	}
	rec := record{Version: recordVersion, Spec: bk.digest, Status: oc.Status, Error: oc.Error, Finished: time.Now().UTC(), Output: oc.Output}
	var ie *job.ImportError
	if oc.Status == Failed && res != nil && res.Upload != nil && errors.As(oc.Err, &ie) {
		// Uploaded whole, then the import failed: a rerun imports again.
		rec.Uploaded = true
		if res.Import != nil {
			rec.ImportToken = res.Import.Request.ClientToken
		}
	}
	if (oc.Status == Done || rec.Uploaded) && res != nil {
		rec.Result = res
		if bk.noLinks {
			rec.Result = resultWithoutLinks(res)
		}
		switch {
		case res.SourceID != nil:
			// The source as the run opened it: a source changed since is
			// not the one the output was made from.
			rec.Source = *res.SourceID
		case res.Remote != nil:
			rec.Source = res.Remote.SourceID()
		default:
			oc.Warnings = append(oc.Warnings, "batch state: the source's identity at open is unknown: the next run will redo this disk")
			return
		}
		if res.Upload != nil {
			rec.OutputID = outputID{Size: res.Upload.Size, ETag: res.Upload.ETag}
		} else if fi, err := os.Stat(oc.Output); err == nil {
			rec.Output, _ = filepath.Abs(oc.Output)
			rec.OutputID = outputID{Size: fi.Size(), MTime: fi.ModTime()}
		}
	}
	b, err := json.Marshal(rec)
	if err == nil {
		err = bk.store.Put(ctx, bk.key, b)
	}
	if err != nil {
		oc.Warnings = append(oc.Warnings, fmt.Sprintf("batch state: %v: the next run will redo this disk", err))
	}
}
