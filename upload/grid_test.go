package upload

import (
	"context"
	"testing"
)

// TestGridParts: part 1 is headPart(size), the others size; the offsets,
// numbers and counts agree with each other.
func TestGridParts(t *testing.T) {
	for _, c := range []struct {
		size, first, n int64
		parts          int32
	}{
		{5 * mib, 5 * mib, 0, 1},
		{5 * mib, 5 * mib, 5 * mib, 1},
		{5 * mib, 5 * mib, 5*mib + 1, 2},
		{64 * mib, 8 * mib, 8 * mib, 1},
		{64 * mib, 8 * mib, 8*mib + 1, 2},
		{64 * mib, 8 * mib, 72 * mib, 2},
		{64 * mib, 8 * mib, 72*mib + 1, 3},
	} {
		if got := headPart(c.size); got != c.first {
			t.Errorf("headPart(%d) = %d, want %d", c.size, got, c.first)
		}
		if got := gridParts(c.n, c.first, c.size); got != c.parts {
			t.Errorf("gridParts(%d, %d, %d) = %d, want %d", c.n, c.first, c.size, got, c.parts)
		}
		g := grid{size: c.size, first: c.first}
		for num := int32(1); num <= 4; num++ {
			start := g.partStart(num)
			if g.partAt(start) != int64(num) || (num > 1 && g.partAt(start-1) != int64(num-1)) {
				t.Errorf("size %d: part %d starts at %d, partAt says %d", c.size, num, start, g.partAt(start))
			}
			if g.partStart(num+1)-start != g.partLen(int64(num)) {
				t.Errorf("size %d: part %d is %d long, the next starts %d later", c.size, num, g.partLen(int64(num)), g.partStart(num+1)-start)
			}
		}
	}
	// A planned part size gives an output of the size hint at most 10,000
	// parts, part 1 counted small.
	for _, hint := range []int64{0, 78 << 30, 79 << 30, 500 << 30, 1 << 40} {
		p, err := PlanPartSize(hint, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := gridParts(hint, headPart(p), p); n > MaxParts {
			t.Errorf("hint %d: parts of %d MiB give %d parts", hint, p>>20, n)
		}
	}
}

// TestLargePartsSmallHead: with parts larger than the head part, part 1 is
// 8 MiB and held alone; the object, its verification and the report agree.
func TestLargePartsSmallHead(t *testing.T) {
	e := newEnv(t, true)
	ops := []op{
		{n: 3 * mib, seed: 1},
		{zero: true, n: 30 * mib}, // the rest of part 1, part 2 mostly zero
		{n: 20*mib + 7, seed: 2},  // crosses into part 3
		{zero: true, n: 20 * mib},
		{n: mib, seed: 3},
	}
	size := patternSize(ops)
	tg := e.start("big.raw", Options{SizeHint: size, PartSize: 16 * mib, Verify: true, Concurrency: 2})
	if tg.g.first != 8*mib {
		t.Fatalf("part 1 of %d bytes, want 8 MiB", tg.g.first)
	}
	want := replay(t, tg, ops)
	// A head patched into part 1 after the rest went up.
	head := make([]byte, 4096)
	copy(head, randBytes(3*mib, 1)[:4096])
	if err := tg.Commit(context.Background(), head); err != nil {
		t.Fatal(err)
	}
	// Every part buffer is back in the pool once the parts are sent:
	// whoever keeps the Target does not keep them.
	if lent := tg.g.pool.bufs.Stats().Lent; tg.g.head != nil || tg.g.cur != nil || lent != 0 {
		t.Errorf("after Commit the Target still holds part buffers: head %v, current %v, %d bytes lent", tg.g.head != nil, tg.g.cur != nil, lent)
	}
	if got := e.objectSHA("big.raw"); got != want {
		t.Fatalf("object sha256 %s, want %s", got, want)
	}
	r := tg.Report()
	if r.Parts != int(gridParts(size, 8*mib, 16*mib)) || !r.Verified || r.Size != size {
		t.Errorf("report: %+v", r)
	}
}
