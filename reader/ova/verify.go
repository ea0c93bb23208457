package ova

import (
	"encoding/hex"
	"errors"
	"io"
	"sort"
	"strings"
	"sync"

	"vmimport/reader/image"
)

// Bounds of the digest check.
const (
	// pendingMax bounds the copies of bytes the pass read ahead of the
	// hash; past it, the verifier reads those bytes again itself.
	pendingMax = 16 << 20
	// lag is how far the pass must have read beyond a gap before the
	// verifier decides the pass leaves it out and reads it itself.
	lag = 4 << 20
	// gapRead is the verifier's own read size.
	gapRead = 1 << 20
)

var errStopped = errors.New("digest check stopped: the image was closed")

// verifier hashes a tar member in order while the conversion pass reads it
// out of order. The disk image reads the member through tee, which offers
// the verifier a copy of every read that reaches past the bytes hashed so
// far; a goroutine hashes those in order. Bytes the pass never reads (the
// format's own structures it skips, or what it read before the check
// started) the goroutine reads itself, once the pass has gone lag bytes
// beyond them and no read in flight covers them, or once the pass is over
// (verify). The member is thus read about once, which matters when it
// comes over the network; over a cache, the gaps are usually cached still.
type verifier struct {
	r      io.ReaderAt
	size   int64
	digest string
	path   string

	mu       sync.Mutex
	cond     *sync.Cond
	started  bool
	finish   bool // the pass is over: read what is left
	stopped  bool
	pos      int64  // bytes hashed (or claimed by the goroutine)
	pending  []span // copies of bytes past pos, sorted by off
	pendingN int64
	inflight []span // reads of the pass under way (data unused)
	high     int64  // how far the pass has read, ignoring jumps ahead
	nextID   int

	done chan struct{}
	err  error
}

type span struct {
	off  int64
	data []byte
	n    int64 // length, for inflight
	id   int
}

func newVerifier(r io.ReaderAt, size int64, digest, p string) *verifier {
	v := &verifier{r: r, size: size, digest: digest, path: p, done: make(chan struct{})}
	v.cond = sync.NewCond(&v.mu)
	return v
}

// tee is the member as the disk image reads it.
func (v *verifier) tee() io.ReaderAt { return teeReader{v} }

type teeReader struct{ v *verifier }

func (t teeReader) ReadAt(p []byte, off int64) (int, error) {
	v := t.v
	id := v.begin(off, int64(len(p)))
	n, err := v.r.ReadAt(p, off)
	v.end(id, p[:n], off)
	return n, err
}

// begin records a read of the pass under way; 0 when the check has not
// started.
func (v *verifier) begin(off, n int64) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started || v.stopped {
		return 0
	}
	v.nextID++
	v.inflight = append(v.inflight, span{off: off, n: n, id: v.nextID})
	return v.nextID
}

// end offers the bytes a read of the pass brought.
func (v *verifier) end(id int, p []byte, off int64) {
	if id == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, s := range v.inflight {
		if s.id == id {
			v.inflight = append(v.inflight[:i], v.inflight[i+1:]...)
			break
		}
	}
	end := off + int64(len(p))
	if off <= v.high+lag {
		// The pass moves on from where it was; a read far ahead (the
		// import check looking at a file system) does not move it.
		v.high = max(v.high, end)
	}
	if end > v.pos && !v.finish && !v.stopped {
		if skip := v.pos - off; skip > 0 {
			p, off = p[skip:], v.pos
		}
		if v.pendingN+int64(len(p)) <= pendingMax {
			i := sort.Search(len(v.pending), func(i int) bool { return v.pending[i].off >= off })
			v.pending = append(v.pending, span{})
			copy(v.pending[i+1:], v.pending[i:])
			v.pending[i] = span{off: off, data: append([]byte(nil), p...)}
			v.pendingN += int64(len(p))
		}
	}
	v.cond.Broadcast()
}

// start begins the check (once): from now on the pass's reads are hashed.
func (v *verifier) start() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started || v.stopped {
		return
	}
	v.started = true
	go v.run()
}

func (v *verifier) run() {
	defer close(v.done)
	err := v.hash()
	v.mu.Lock()
	v.err = err
	v.pending, v.pendingN = nil, 0
	v.mu.Unlock()
}

func (v *verifier) hash() error {
	algo, want, _ := strings.Cut(v.digest, ":")
	h, err := newHash(algo)
	if err != nil {
		return err
	}
	var buf []byte
	v.mu.Lock()
	defer v.mu.Unlock()
	for v.pos < v.size {
		if v.stopped {
			return errStopped
		}
		if len(v.pending) > 0 && v.pending[0].off <= v.pos {
			s := v.pending[0]
			v.pending = v.pending[1:]
			v.pendingN -= int64(len(s.data))
			if end := s.off + int64(len(s.data)); end > v.pos {
				b := s.data[v.pos-s.off:]
				v.pos = end
				v.mu.Unlock()
				h.Write(b)
				v.mu.Lock()
			}
			continue
		}
		if v.finish || (v.high >= v.pos+lag && !v.covered(v.pos)) {
			gapEnd := v.size
			if len(v.pending) > 0 {
				gapEnd = v.pending[0].off
			}
			n := min(gapEnd-v.pos, gapRead)
			off := v.pos
			v.pos += n
			v.mu.Unlock()
			if buf == nil {
				buf = make([]byte, gapRead)
			}
			err := image.ReadFull(v.r, v.size, buf[:n], off, v.path, "ova", "the disk, for its digest")
			if err == nil {
				h.Write(buf[:n])
			}
			v.mu.Lock()
			if err != nil {
				return err
			}
			continue
		}
		v.cond.Wait()
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return image.Corruptf(v.path, "ova", -1, "%s digest of the disk is %s, but the manifest says %s: the disk is damaged or was altered", algo, got, want)
	}
	return nil
}

// covered reports whether a read of the pass under way covers off.
func (v *verifier) covered(off int64) bool {
	for _, s := range v.inflight {
		if s.off <= off && off < s.off+s.n {
			return true
		}
	}
	return false
}

// verify ends the pass: the goroutine reads what is left, and its verdict
// is returned.
func (v *verifier) verify() error {
	v.start()
	v.mu.Lock()
	v.finish = true
	v.cond.Broadcast()
	v.mu.Unlock()
	<-v.done
	return v.err
}

// stop ends the check early (the image is closed).
func (v *verifier) stop() {
	v.mu.Lock()
	was := v.stopped
	v.stopped = true
	started := v.started
	if !started && !was {
		v.err = errStopped
		close(v.done) // no goroutine to close it
	}
	v.cond.Broadcast()
	v.mu.Unlock()
	<-v.done
}
