// Package storetest is the conformance suite of objstore.Store: the
// memory store, a real S3 server (versitygw) and the retrying wrapper over
// a store that fails often run the same cases, as restic runs one suite
// against each of its backends. A Store that passes behaves as the upload,
// the import and the readers expect.
package storetest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"vmimport/internal/objstore"
)

// Run runs the suite; newStore returns an empty bucket for one case.
func Run(t *testing.T, newStore func(t *testing.T) objstore.Store) {
	for _, c := range []struct {
		name string
		f    func(*testing.T, objstore.Store)
	}{
		{"Objects", objects},
		{"ConditionalReads", conditional},
		{"BadDigest", badDigest},
		{"Multipart", multipart},
		{"CopyPart", copyPart},
		{"Abort", abort},
		{"CompleteWrongPart", wrongPart},
		{"PartTooSmall", tooSmall},
		{"List", list},
		{"Bucket", bucket},
	} {
		t.Run(c.name, func(t *testing.T) { c.f(t, newStore(t)) })
	}
}

const mib = 1 << 20

func data(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) [16]byte { return md5.Sum(b) }

func hexsum(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s objstore.Store, key string, off, n int64, ifMatch string) ([]byte, objstore.Range, error) {
	t.Helper()
	rc, r, err := s.Get(context.Background(), key, off, n, ifMatch)
	if err != nil {
		return nil, r, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, r, err
}

func objects(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	b := data(300<<10, 1)
	must(t, s.Put(ctx, "dir/a.bin", bytes.NewReader(b), int64(len(b)), sum(b)))
	h, err := s.Head(ctx, "dir/a.bin")
	must(t, err)
	if h.Size != int64(len(b)) || h.ETag != hexsum(b) || h.Modified.IsZero() {
		t.Fatalf("Head: %+v, want %d bytes, ETag %s", h, len(b), hexsum(b))
	}
	got, r, err := get(t, s, "dir/a.bin", 1000, 5000, "")
	must(t, err)
	if !bytes.Equal(got, b[1000:6000]) || r.Start != 1000 || r.End != 5999 || r.ETag != h.ETag {
		t.Fatalf("Get 1000+5000: %d bytes, range %+v", len(got), r)
	}
	if r.Total != -1 && r.Total != int64(len(b)) {
		t.Fatalf("Get: total %d, want %d", r.Total, len(b))
	}
	must(t, s.Delete(ctx, "dir/a.bin"))
	if _, err := s.Head(ctx, "dir/a.bin"); !objstore.NotFound(err) {
		t.Fatalf("Head of a deleted object: %v", err)
	}
	if _, _, err := get(t, s, "dir/a.bin", 0, 1, ""); !objstore.NotFound(err) {
		t.Fatalf("Get of a deleted object: %v", err)
	}
	if err := s.Delete(ctx, "dir/never"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
}

// conditional: a read pinned to an ETag fails once the object changed; a
// range past the end fails the same way (the object got shorter).
func conditional(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	v1, v2 := data(64<<10, 2), data(64<<10, 3)
	must(t, s.Put(ctx, "obj", bytes.NewReader(v1), int64(len(v1)), sum(v1)))
	got, _, err := get(t, s, "obj", 0, 100, hexsum(v1))
	if err != nil || !bytes.Equal(got, v1[:100]) {
		t.Fatalf("Get pinned to the current ETag: %v", err)
	}
	if _, _, err := get(t, s, "obj", 0, 100, objstore.Quote(hexsum(v1))); err != nil {
		t.Fatalf("Get pinned to the quoted ETag: %v", err)
	}
	must(t, s.Put(ctx, "obj", bytes.NewReader(v2), int64(len(v2)), sum(v2)))
	_, _, err = get(t, s, "obj", 0, 100, hexsum(v1))
	if !objstore.Changed(err) || objstore.Retryable(err) {
		t.Fatalf("Get pinned to an old ETag: %v (status %d)", err, objstore.Status(err))
	}
	_, _, err = get(t, s, "obj", int64(len(v2))+10, 10, "")
	if !objstore.Changed(err) || objstore.Retryable(err) {
		t.Fatalf("Get past the end: %v (status %d)", err, objstore.Status(err))
	}
}

func badDigest(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	b := data(1000, 4)
	err := s.Put(ctx, "bad", bytes.NewReader(b), int64(len(b)), sum(b[1:]))
	if err == nil || objstore.Status(err) != 400 || objstore.Retryable(err) {
		t.Fatalf("Put with a wrong MD5: %v (status %d)", err, objstore.Status(err))
	}
	if _, err := s.Head(ctx, "bad"); !objstore.NotFound(err) {
		t.Fatalf("the refused object is there: %v", err)
	}
}

func multipart(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	parts := [][]byte{data(5*mib, 5), data(5*mib, 6), data(1234, 7)}
	meta := map[string]string{"convert-disk-format": "qcow2", "convert-image-name": "web01"}
	id, err := s.CreateUpload(ctx, "img/web01.qcow2", meta)
	must(t, err)
	ups, err := s.ListUploads(ctx, "img/")
	must(t, err)
	if !slices.ContainsFunc(ups, func(u objstore.Upload) bool { return u.UploadID == id && u.Key == "img/web01.qcow2" }) {
		t.Fatalf("ListUploads: %+v, want %s", ups, id)
	}
	// Sent out of order: the number fixes the place.
	var etags [3]string
	for _, i := range []int{2, 0, 1} {
		p := parts[i]
		etags[i], err = s.UploadPart(ctx, "img/web01.qcow2", id, int32(i+1), bytes.NewReader(p), int64(len(p)), sum(p))
		must(t, err)
		if etags[i] != hexsum(p) {
			t.Fatalf("part %d: ETag %s, want %s", i+1, etags[i], hexsum(p))
		}
	}
	listed, err := s.ListParts(ctx, "img/web01.qcow2", id)
	must(t, err)
	if len(listed) != 3 || listed[0].Num != 1 || listed[2].Size != 1234 || listed[1].ETag != etags[1] {
		t.Fatalf("ListParts: %+v", listed)
	}
	etag, err := s.Complete(ctx, "img/web01.qcow2", id, etags[:])
	must(t, err)
	h := md5.New()
	for _, e := range etags {
		b, _ := hex.DecodeString(e)
		h.Write(b)
	}
	want := fmt.Sprintf("%x-3", h.Sum(nil))
	if etag != want {
		t.Fatalf("Complete: ETag %s, want %s", etag, want)
	}
	o, err := s.Head(ctx, "img/web01.qcow2")
	must(t, err)
	if o.Size != int64(10*mib+1234) || o.ETag != want {
		t.Fatalf("Head: %+v", o)
	}
	for k, v := range meta {
		if !slices.ContainsFunc(mapKeys(o.Metadata), func(mk string) bool { return strings.EqualFold(mk, k) && o.Metadata[mk] == v }) {
			t.Errorf("metadata %s=%s lost: %v", k, v, o.Metadata)
		}
	}
	got, _, err := get(t, s, "img/web01.qcow2", 5*mib-10, 20, want)
	must(t, err)
	if !bytes.Equal(got, append(slices.Clone(parts[0][5*mib-10:]), parts[1][:10]...)) {
		t.Fatal("the bytes across parts 1 and 2 differ")
	}
	if ups, _ := s.ListUploads(ctx, "img/"); slices.ContainsFunc(ups, func(u objstore.Upload) bool { return u.UploadID == id }) {
		t.Fatal("the completed upload is still listed")
	}
	if _, err := s.ListParts(ctx, "img/web01.qcow2", id); !objstore.NotFound(err) {
		t.Fatalf("ListParts of a completed upload: %v", err)
	}
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// copyPart: a part copied from the first bytes of another object, as
// zero parts are copied from the zero object.
func copyPart(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	zeros := make([]byte, 6*mib)
	must(t, s.Put(ctx, "k.convert-zeros-1", bytes.NewReader(zeros), int64(len(zeros)), sum(zeros)))
	id, err := s.CreateUpload(ctx, "k", nil)
	must(t, err)
	e1, err := s.CopyPart(ctx, "k", id, 1, "k.convert-zeros-1", 5*mib)
	must(t, err)
	if e1 != "" && e1 != hexsum(zeros[:5*mib]) {
		t.Fatalf("CopyPart: ETag %s, want %s", e1, hexsum(zeros[:5*mib]))
	}
	tail := data(100, 8)
	e2, err := s.UploadPart(ctx, "k", id, 2, bytes.NewReader(tail), int64(len(tail)), sum(tail))
	must(t, err)
	if _, err := s.Complete(ctx, "k", id, []string{hexsum(zeros[:5*mib]), e2}); err != nil {
		t.Fatal(err)
	}
	got, _, err := get(t, s, "k", 5*mib-4, 8, "")
	must(t, err)
	if !bytes.Equal(got, append(make([]byte, 4), tail[:4]...)) {
		t.Fatalf("the copied part's bytes: %x", got)
	}
	if _, err := s.CopyPart(ctx, "k", "no-such-upload", 1, "k.convert-zeros-1", 10); err == nil {
		t.Fatal("CopyPart into a missing upload")
	}
}

func abort(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	id, err := s.CreateUpload(ctx, "gone", nil)
	must(t, err)
	p := data(1000, 9)
	_, err = s.UploadPart(ctx, "gone", id, 1, bytes.NewReader(p), int64(len(p)), sum(p))
	must(t, err)
	must(t, s.AbortUpload(ctx, "gone", id))
	if _, err := s.ListParts(ctx, "gone", id); !objstore.NotFound(err) {
		t.Fatalf("ListParts after the abort: %v", err)
	}
	if ups, _ := s.ListUploads(ctx, ""); slices.ContainsFunc(ups, func(u objstore.Upload) bool { return u.UploadID == id }) {
		t.Fatal("the aborted upload is still listed")
	}
	if _, err := s.Head(ctx, "gone"); !objstore.NotFound(err) {
		t.Fatalf("an object after the abort: %v", err)
	}
}

// wrongPart: Complete with an ETag that is not the part's is refused, and
// the upload stays.
func wrongPart(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	id, err := s.CreateUpload(ctx, "w", nil)
	must(t, err)
	p := data(1000, 10)
	_, err = s.UploadPart(ctx, "w", id, 1, bytes.NewReader(p), int64(len(p)), sum(p))
	must(t, err)
	_, err = s.Complete(ctx, "w", id, []string{strings.Repeat("0", 32)})
	if err == nil || objstore.Retryable(err) {
		t.Fatalf("Complete with a wrong ETag: %v", err)
	}
	if _, err := s.ListParts(ctx, "w", id); err != nil {
		t.Fatalf("the upload is gone after a refused Complete: %v", err)
	}
	must(t, s.AbortUpload(ctx, "w", id))
}

func list(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		b := []byte(k)
		must(t, s.Put(ctx, k, bytes.NewReader(b), int64(len(b)), sum(b)))
	}
	objs, err := s.List(ctx, "a/")
	must(t, err)
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
		if o.Size != 3 || o.ETag != hexsum([]byte(o.Key)) {
			t.Errorf("List: %+v", o)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"a/1", "a/2"}) {
		t.Fatalf("List a/: %v", keys)
	}
}

func bucket(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	must(t, s.Stat(ctx))
	if _, err := s.Location(ctx); err != nil {
		t.Fatal(err)
	}
}

// tooSmall: a part other than the last under 5 MiB is refused at
// Complete.
func tooSmall(t *testing.T, s objstore.Store) {
	ctx := context.Background()
	id, err := s.CreateUpload(ctx, "small", nil)
	must(t, err)
	var etags []string
	for i, n := range []int{1000, 1000} {
		p := data(n, uint64(20+i))
		e, err := s.UploadPart(ctx, "small", id, int32(i+1), bytes.NewReader(p), int64(len(p)), sum(p))
		must(t, err)
		etags = append(etags, e)
	}
	if _, err := s.Complete(ctx, "small", id, etags); err == nil || objstore.Retryable(err) {
		t.Fatalf("Complete with a first part of 1000 bytes: %v", err)
	}
	must(t, s.AbortUpload(ctx, "small", id))
}
