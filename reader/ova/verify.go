package ova

// Checking an OVA member against its manifest digest while it is read.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"vmimport/reader/image"
)

// verifier hashes a tar member in the background.
type verifier struct {
	r       io.ReaderAt
	size    int64
	digest  string
	path    string
	once    sync.Once
	done    chan struct{}
	err     error
	stopped atomic.Bool
}

var errStopped = errors.New("digest check stopped: the image was closed")

func newVerifier(r io.ReaderAt, size int64, digest, p string) *verifier {
	return &verifier{r: r, size: size, digest: digest, path: p, done: make(chan struct{})}
}

func (v *verifier) start() {
	v.once.Do(func() { go v.run() })
}

func (v *verifier) run() {
	defer close(v.done)
	algo, want, _ := strings.Cut(v.digest, ":")
	h, err := newHash(algo)
	if err != nil {
		v.err = err
		return
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < v.size; {
		if v.stopped.Load() {
			v.err = errStopped
			return
		}
		k := min(int64(len(buf)), v.size-off)
		n, err := v.r.ReadAt(buf[:k], off)
		h.Write(buf[:n])
		off += int64(n)
		if int64(n) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			v.err = fmt.Errorf("%s: ova: reading the disk for its digest: %w", v.path, err)
			return
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		v.err = image.Corruptf(v.path, "ova", -1, "%s digest of the disk is %s, but the manifest says %s: the disk is damaged or was altered", algo, got, want)
	}
}

func (v *verifier) verify() error {
	v.start()
	<-v.done
	return v.err
}

func (v *verifier) stop() {
	v.stopped.Store(true)
	v.once.Do(func() { // never started: nothing to wait for
		v.err = errStopped
		close(v.done)
	})
	<-v.done
}
