package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is an object store in memory, with S3's rules where convert
// meets them (Content-MD5 checked, multipart ETags, parts of at least
// MinPart but the last, conditional and ranged reads, copies of ranges),
// and faults on demand: for tests of everything above the Store, without
// a server. Its zero value has no bucket; Bucket makes one.
type Memory struct {
	// MinPart is the least size of a part other than the last (default
	// 5 MiB, as S3); Complete refuses smaller ones (EntityTooSmall).
	MinPart int64
	// Fault, if set, is asked before every call: a non-nil error is the
	// call's answer, and nothing is done. n counts the calls of op, from 1.
	Fault func(op, key string, n int) error

	mu      sync.Mutex
	buckets map[string]*memBucket
	calls   map[string]int
}

type memBucket struct {
	objects map[string]*memObject
	uploads map[string]*memUpload
}

type memObject struct {
	data     []byte
	etag     string
	modified time.Time
	meta     map[string]string
}

type memUpload struct {
	key       string
	initiated time.Time
	meta      map[string]string
	parts     map[int32]*memObject
}

// Bucket is the store of bucket name, which is made if it is not there.
func (m *Memory) Bucket(name string) Store {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buckets == nil {
		m.buckets = map[string]*memBucket{}
	}
	if m.buckets[name] == nil {
		m.buckets[name] = &memBucket{objects: map[string]*memObject{}, uploads: map[string]*memUpload{}}
	}
	return memStore{m, name}
}

// Missing is the store of a bucket that does not exist (NoSuchBucket).
func (m *Memory) Missing(name string) Store { return memStore{m, name} }

// Calls is the number of calls of op so far ("UploadPart", ...).
func (m *Memory) Calls(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// Keys lists the objects of a bucket, sorted.
func (m *Memory) Keys(bucket string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.buckets[bucket]; b != nil {
		return slices.Sorted(maps.Keys(b.objects))
	}
	return nil
}

// Object is a copy of an object's bytes (nil when there is none).
func (m *Memory) Object(bucket, key string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.buckets[bucket]; b != nil && b.objects[key] != nil {
		return bytes.Clone(b.objects[key].data)
	}
	return nil
}

// Uploads counts the incomplete uploads of a bucket.
func (m *Memory) Uploads(bucket string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.buckets[bucket]; b != nil {
		return len(b.uploads)
	}
	return 0
}

// Injected is an answer of the store with status and code, for Fault.
func Injected(op string, status int, code string) error {
	return &Error{Op: op, Status: status, Code: code, Message: "injected by the test", RequestID: "mem-" + code}
}

type memStore struct {
	m      *Memory
	bucket string
}

var _ Store = memStore{}

// call counts op, asks Fault, checks ctx, and runs f with the bucket
// under the lock.
func (s memStore) call(ctx context.Context, op, key string, f func(b *memBucket) error) error {
	s.m.mu.Lock()
	if s.m.calls == nil {
		s.m.calls = map[string]int{}
	}
	s.m.calls[op]++
	n := s.m.calls[op]
	fault := s.m.Fault
	s.m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return &Error{Op: op, Err: err}
	}
	if fault != nil {
		if err := fault(op, key, n); err != nil {
			return err
		}
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	b := s.m.buckets[s.bucket]
	if b == nil {
		return answer(op, http.StatusNotFound, "NoSuchBucket", "the bucket does not exist")
	}
	return f(b)
}

func answer(op string, status int, code, msg string) error {
	return &Error{Op: op, Status: status, Code: code, Message: msg, RequestID: "mem"}
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// readAll reads size bytes of body and checks their MD5.
func readAll(op string, body io.ReadSeeker, size int64, sum [16]byte) ([]byte, error) {
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	data, err := io.ReadAll(io.LimitReader(body, size+1))
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if int64(len(data)) != size {
		return nil, answer(op, http.StatusBadRequest, "IncompleteBody", fmt.Sprintf("%d bytes sent, %d announced", len(data), size))
	}
	if md5.Sum(data) != sum {
		return nil, answer(op, http.StatusBadRequest, "BadDigest", "the Content-MD5 you specified did not match what was received")
	}
	return data, nil
}

func object(data []byte, meta map[string]string) *memObject {
	sum := md5.Sum(data)
	return &memObject{data: data, etag: hex.EncodeToString(sum[:]), modified: time.Now().UTC(), meta: meta}
}

func (s memStore) CreateUpload(ctx context.Context, key string, meta map[string]string) (id string, err error) {
	err = s.call(ctx, "CreateMultipartUpload", key, func(b *memBucket) error {
		id = newID()
		b.uploads[id] = &memUpload{key: key, initiated: time.Now().UTC(), meta: maps.Clone(meta), parts: map[int32]*memObject{}}
		return nil
	})
	return id, err
}

func (b *memBucket) upload(op, key, id string) (*memUpload, error) {
	u := b.uploads[id]
	if u == nil || u.key != key {
		return nil, answer(op, http.StatusNotFound, "NoSuchUpload", "the specified upload does not exist")
	}
	return u, nil
}

func (s memStore) UploadPart(ctx context.Context, key, uploadID string, num int32, body io.ReadSeeker, size int64, sum [16]byte) (etag string, err error) {
	const op = "UploadPart"
	data, err := readAll(op, body, size, sum)
	if err != nil {
		return "", err
	}
	err = s.call(ctx, op, key, func(b *memBucket) error {
		u, err := b.upload(op, key, uploadID)
		if err != nil {
			return err
		}
		if num < 1 || num > 10000 {
			return answer(op, http.StatusBadRequest, "InvalidArgument", "part number must be 1..10000")
		}
		p := object(data, nil)
		u.parts[num], etag = p, p.etag
		return nil
	})
	return etag, err
}

func (s memStore) CopyPart(ctx context.Context, key, uploadID string, num int32, srcKey string, n int64) (etag string, err error) {
	const op = "UploadPartCopy"
	err = s.call(ctx, op, key, func(b *memBucket) error {
		u, err := b.upload(op, key, uploadID)
		if err != nil {
			return err
		}
		src := b.objects[srcKey]
		switch {
		case src == nil:
			return answer(op, http.StatusNotFound, "NoSuchKey", "the copy source does not exist")
		case n <= 0 || n > int64(len(src.data)):
			return answer(op, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "the copy range is not in the source")
		}
		p := object(bytes.Clone(src.data[:n]), nil)
		u.parts[num], etag = p, p.etag
		return nil
	})
	return etag, err
}

func (s memStore) ListParts(ctx context.Context, key, uploadID string) (parts []Part, err error) {
	const op = "ListParts"
	err = s.call(ctx, op, key, func(b *memBucket) error {
		u, err := b.upload(op, key, uploadID)
		if err != nil {
			return err
		}
		for _, num := range slices.Sorted(maps.Keys(u.parts)) {
			parts = append(parts, Part{Num: num, ETag: u.parts[num].etag, Size: int64(len(u.parts[num].data))})
		}
		return nil
	})
	return parts, err
}

func (s memStore) Complete(ctx context.Context, key, uploadID string, etags []string) (etag string, err error) {
	const op = "CompleteMultipartUpload"
	minPart := s.m.MinPart
	if minPart == 0 {
		minPart = 5 << 20
	}
	err = s.call(ctx, op, key, func(b *memBucket) error {
		u, err := b.upload(op, key, uploadID)
		if err != nil {
			return err
		}
		if len(etags) == 0 {
			return answer(op, http.StatusBadRequest, "MalformedXML", "no parts")
		}
		var data []byte
		h := md5.New()
		for i, want := range etags {
			p := u.parts[int32(i+1)]
			if p == nil || (want != "" && want != p.etag) {
				return answer(op, http.StatusBadRequest, "InvalidPart", fmt.Sprintf("part %d is not there with ETag %s", i+1, want))
			}
			if i < len(etags)-1 && int64(len(p.data)) < minPart {
				return answer(op, http.StatusBadRequest, "EntityTooSmall", fmt.Sprintf("part %d is %d bytes", i+1, len(p.data)))
			}
			sum, _ := hex.DecodeString(p.etag)
			h.Write(sum)
			data = append(data, p.data...)
		}
		o := object(data, u.meta)
		o.etag = fmt.Sprintf("%x-%d", h.Sum(nil), len(etags))
		b.objects[key], etag = o, o.etag
		delete(b.uploads, uploadID)
		return nil
	})
	return etag, err
}

func (s memStore) AbortUpload(ctx context.Context, key, uploadID string) error {
	const op = "AbortMultipartUpload"
	return s.call(ctx, op, key, func(b *memBucket) error {
		if _, err := b.upload(op, key, uploadID); err != nil {
			return err
		}
		delete(b.uploads, uploadID)
		return nil
	})
}

func (s memStore) ListUploads(ctx context.Context, prefix string) (ups []Upload, err error) {
	err = s.call(ctx, "ListMultipartUploads", prefix, func(b *memBucket) error {
		for id, u := range b.uploads {
			if strings.HasPrefix(u.key, prefix) {
				ups = append(ups, Upload{Key: u.key, UploadID: id, Initiated: u.initiated})
			}
		}
		slices.SortFunc(ups, func(a, b Upload) int { return strings.Compare(a.Key+a.UploadID, b.Key+b.UploadID) })
		return nil
	})
	return ups, err
}

func (s memStore) List(ctx context.Context, prefix string) (objs []Object, err error) {
	err = s.call(ctx, "ListObjectsV2", prefix, func(b *memBucket) error {
		for _, k := range slices.Sorted(maps.Keys(b.objects)) {
			if o := b.objects[k]; strings.HasPrefix(k, prefix) {
				objs = append(objs, Object{Key: k, Size: int64(len(o.data)), ETag: o.etag, Modified: o.modified})
			}
		}
		return nil
	})
	return objs, err
}

func (s memStore) Head(ctx context.Context, key string) (obj Object, err error) {
	const op = "HeadObject"
	err = s.call(ctx, op, key, func(b *memBucket) error {
		o := b.objects[key]
		if o == nil {
			return &Error{Op: op, Status: http.StatusNotFound, Code: "NotFound", RequestID: "mem"}
		}
		obj = Object{Key: key, Size: int64(len(o.data)), ETag: o.etag, Modified: o.modified, Metadata: maps.Clone(o.meta)}
		return nil
	})
	return obj, err
}

func (s memStore) Put(ctx context.Context, key string, body io.ReadSeeker, size int64, sum [16]byte) error {
	const op = "PutObject"
	data, err := readAll(op, body, size, sum)
	if err != nil {
		return err
	}
	return s.call(ctx, op, key, func(b *memBucket) error {
		b.objects[key] = object(data, nil)
		return nil
	})
}

func (s memStore) Delete(ctx context.Context, key string) error {
	return s.call(ctx, "DeleteObject", key, func(b *memBucket) error {
		delete(b.objects, key)
		return nil
	})
}

func (s memStore) Get(ctx context.Context, key string, off, n int64, ifMatch string) (rc io.ReadCloser, r Range, err error) {
	const op = "GetObject"
	err = s.call(ctx, op, key, func(b *memBucket) error {
		o := b.objects[key]
		switch size := int64(len(o.dataOrNil())); {
		case o == nil:
			return answer(op, http.StatusNotFound, "NoSuchKey", "the specified key does not exist")
		case ifMatch != "" && normETag(ifMatch) != o.etag:
			return answer(op, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		case off < 0 || n <= 0 || off >= size:
			return answer(op, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "the requested range is not satisfiable")
		default:
			end := min(off+n, size)
			rc = io.NopCloser(bytes.NewReader(bytes.Clone(o.data[off:end])))
			r = Range{ETag: o.etag, Start: off, End: end - 1, Total: size}
		}
		return nil
	})
	return rc, r, err
}

func (o *memObject) dataOrNil() []byte {
	if o == nil {
		return nil
	}
	return o.data
}

func (s memStore) Stat(ctx context.Context) error {
	return s.call(ctx, "HeadBucket", "", func(*memBucket) error { return nil })
}

func (s memStore) Location(ctx context.Context) (string, error) {
	return "", s.call(ctx, "GetBucketLocation", "", func(*memBucket) error { return nil })
}
