package batch

import (
	"context"

	"vmimport/job"
)

// Disk is one disk run on its own, as Run runs each of its items, for
// runners that take disks one at a time (a queue worker). Convert checks
// the bookkeeping (a disk done from the same source with the same settings,
// whose output is still there, is Skipped), runs the job (resuming an
// upload an earlier run left) and records how it ended. A disk whose spec
// waits for its import is recorded only when Follow has followed the task:
// Convert gives back the disk's share of memory first, so that a runner
// need not hold a slot for the hours an import may take.
type Disk struct {
	r *runner
}

// NewDisk prepares the disk it; budget (nil: none) bounds its memory with
// the other disks of the caller. Of o, State, Events, UploadState,
// KeepUploads, Fence and Clients apply (give Clients: the caller's disks
// share them); Events hears the disk as index 0.
func NewDisk(it Item, budget *job.Budget, o Options) *Disk {
	return &Disk{r: &runner{o: o, items: []Item{it}, budget: budget, out: make([]Outcome, 1)}}
}

// Convert runs the disk up to its import: it returns the outcome, and
// whether an import task is still to be followed (Follow).
func (d *Disk) Convert(ctx context.Context) (oc Outcome, following bool) {
	d.r.one(ctx, 0)
	return d.r.out[0], len(d.r.waiting) > 0
}

// Follow waits for the disk's import task, records how the disk ended and
// returns its outcome. Without a task to follow it returns Convert's.
func (d *Disk) Follow(ctx context.Context) Outcome {
	d.r.follow(ctx)
	return d.r.out[0]
}

// Digest is a digest of the settings of s that shape its output bytes (the
// format, QCOW2 options, disk size, store, ...): a disk done with the same
// digest from the same source need not be done again.
func Digest(s *job.Spec) string { return specDigest(s) }

// Tally totals outcomes as Run's summary does (Jobs, Memory and Seconds
// are the caller's to fill).
func Tally(outs []Outcome) Summary {
	sum := Summary{Disks: len(outs)}
	for _, oc := range outs {
		switch oc.Status {
		case Done:
			sum.Done++
			sum.Bytes += oc.Bytes
			if oc.Stats != nil {
				sum.Virtual += oc.Stats.Size
			}
		case Skipped:
			sum.Skipped++
		case Failed:
			sum.Failed++
		case Cancelled:
			sum.Cancelled++
		case Planned:
			sum.Planned++
		}
	}
	return sum
}
