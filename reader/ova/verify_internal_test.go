package ova

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"

	"vmimport/reader/image"
)

// countingReaderAt counts the bytes read from it.
type countingReaderAt struct {
	r *bytes.Reader
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestVerifierReadsOnce: the digest comes from the pass's own reads, out
// of order and from several goroutines; the verifier reads only the gaps
// the pass leaves, and a wrong digest is caught.
func TestVerifierReadsOnce(t *testing.T) {
	data := make([]byte, 12<<20+777)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(data)
	good := "SHA256:" + hex.EncodeToString(sum[:])
	bad := "SHA256:" + hex.EncodeToString(make([]byte, 32))
	// The pass reads blocks of 256 KiB from 4 goroutines, skipping two
	// gaps (a header and a table the pass never needs).
	const block = 256 << 10
	skip := map[int]bool{0: true, 17: true}
	for _, c := range []struct {
		digest string
		want   error
	}{{good, nil}, {bad, image.ErrCorrupt}} {
		src := &countingReaderAt{r: bytes.NewReader(data)}
		v := newVerifier(src, int64(len(data)), c.digest, "test[disk.vmdk]")
		r := v.tee()
		v.start()
		var next atomic.Int64
		var g errgroup.Group
		for range 4 {
			g.Go(func() error {
				for {
					i := int(next.Add(1) - 1)
					off := int64(i) * block
					if off >= int64(len(data)) {
						return nil
					}
					if skip[i] {
						continue
					}
					p := make([]byte, min(block, int64(len(data))-off))
					if _, err := r.ReadAt(p, off); err != nil {
						return err
					}
					if !bytes.Equal(p, data[off:off+int64(len(p))]) {
						return errors.New("wrong bytes through the tee")
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		err := v.verify()
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Fatalf("digest %s: verify = %v, want %v", c.digest[:14], err, c.want)
		}
		if n := src.n.Load(); n > int64(len(data))+2*block {
			t.Errorf("read %d bytes for a member of %d: the verifier read more than the gaps", n, len(data))
		}
	}
}

// TestVerifierStop: closing before, during or after the check never hangs.
func TestVerifierStop(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 3<<20)
	for _, when := range []string{"before", "during", "after"} {
		v := newVerifier(bytes.NewReader(data), int64(len(data)), "SHA256:00", "t")
		switch when {
		case "during":
			v.start()
		case "after":
			v.verify()
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); v.stop() }()
		wg.Wait()
		if err := v.verify(); err == nil {
			t.Errorf("%s: verify after stop = nil", when)
		}
	}
}
