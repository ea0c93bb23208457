package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
}

func (b *runner) bookkeeping(it *Item) *book {
	bk := &book{store: b.o.State, clients: b.o.Clients, spec: &it.Spec}
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
	if bk.store == nil {
		return nil, ""
	}
	b, err := bk.store.Get(ctx, bk.key)
	if err != nil {
		return nil, ""
	}
	var rec record
	if json.Unmarshal(b, &rec) != nil || rec.Version != recordVersion || rec.Status != Done || rec.Spec != bk.digest || rec.Result == nil {
		return nil, ""
	}
	now, err := job.IdentifySource(ctx, bk.spec)
	if err != nil || rec.Source.Same(now) != nil {
		return nil, ""
	}
	if !bk.outputThere(ctx, &rec) {
		return nil, ""
	}
	return &rec, fmt.Sprintf("done at %s from the same source with the same settings; %s is unchanged", rec.Finished.Local().Format(time.DateTime), rec.Output)
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
	if oc.Status == Done && res != nil {
		rec.Result = res
		var err error
		if res.Remote != nil {
			rec.Source = res.Remote.SourceID() // the version the run read
		} else if rec.Source, err = upload.IdentifySource(bk.spec.Source); err != nil {
			oc.Warnings = append(oc.Warnings, fmt.Sprintf("batch state: %v: the next run will redo this disk", err))
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
