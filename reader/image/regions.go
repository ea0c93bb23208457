package image

import (
	"fmt"
	"sort"
)

// Region is a named byte range [Start, End) of an image file holding the
// container's own structures (headers, tables, logs), which no data block
// may overlap.
type Region struct {
	Start, End int64
	What       string
}

func (r Region) String() string { return fmt.Sprintf("%s [%d, %d)", r.What, r.Start, r.End) }

// Regions is a set of regions to check data against. Add them, call Seal
// once, then ask Overlap as often as needed.
type Regions struct {
	rs     []Region
	maxEnd []int64 // maxEnd[i] is the largest End of rs[0..i]
}

// Add records [start, start+n) as the structure what; empty ranges are
// ignored.
func (r *Regions) Add(start, n int64, what string) {
	if n <= 0 {
		return
	}
	r.rs = append(r.rs, Region{Start: start, End: start + n, What: what})
}

// Seal sorts the regions for Overlap.
func (r *Regions) Seal() {
	sort.Slice(r.rs, func(i, j int) bool { return r.rs[i].Start < r.rs[j].Start })
	r.maxEnd = make([]int64, len(r.rs))
	var m int64
	for i, x := range r.rs {
		m = max(m, x.End)
		r.maxEnd[i] = m
	}
}

// Len is the number of regions.
func (r *Regions) Len() int { return len(r.rs) }

// Overlap returns a region that [start, start+n) overlaps, if any.
func (r *Regions) Overlap(start, n int64) (Region, bool) {
	if n <= 0 {
		return Region{}, false
	}
	end := start + n
	// Regions from k on start at or after end: they cannot overlap.
	k := sort.Search(len(r.rs), func(i int) bool { return r.rs[i].Start >= end })
	for i := k - 1; i >= 0 && r.maxEnd[i] > start; i-- {
		if r.rs[i].End > start {
			return r.rs[i], true
		}
	}
	return Region{}, false
}
