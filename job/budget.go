package job

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"vmimport/internal/bufpool"
	"vmimport/internal/units"
	"vmimport/reader/remote"
	"vmimport/upload"
	"vmimport/writer/qcow2"
)

// Budget is one bound on the memory of the jobs that run at once: the
// blocks in flight and the upload part buffers of every running job
// together. A job takes its share before it reads a block and gives it back
// when it ends; while the budget is spent, the next job waits. The buffers
// themselves come from the budget's pool, the process's one allocator of
// large buffers, bounded by the same total: a job borrows them within its
// share and gives them back, and the next job borrows them again.
type Budget struct {
	total int64
	sem   *semaphore.Weighted
	bufs  *bufpool.Pool
	used  atomic.Int64 // the shares held now
}

// NewBudget returns a budget of total bytes.
func NewBudget(total int64) *Budget {
	return &Budget{total: total, sem: semaphore.NewWeighted(total), bufs: bufpool.New(total)}
}

// Total is the size of the budget in bytes.
func (b *Budget) Total() int64 { return b.total }

// Buffers is the pool the budget's jobs borrow their buffers from.
func (b *Budget) Buffers() *bufpool.Pool { return b.bufs }

// Used is the part of the budget the running jobs hold now, in bytes.
func (b *Budget) Used() int64 { return b.used.Load() }

func (b *Budget) acquire(ctx context.Context, n int64) error {
	if err := b.sem.Acquire(ctx, n); err != nil {
		return err
	}
	b.used.Add(n)
	return nil
}

func (b *Budget) release(n int64) {
	b.used.Add(-n)
	b.sem.Release(n)
}

// DefaultPartsMemory bounds the part buffers of an upload (those in flight
// and the one being filled; part 1 is apart and small) unless the user
// chose --upload-concurrency: 8 parts in flight up to 8 MiB parts (disks up
// to ~78 GiB), then fewer, down to 1 in flight with the 64 MiB parts of a
// 500 GiB disk. A single upload then peaks well under 256 MiB.
const DefaultPartsMemory = 128 << 20

// Memory a job uses besides its blocks and parts: the reader's tables and
// caches, the encoders' buffers, the HTTP client. Measured on the test
// disks and rounded up; the QCOW2 encoder's own is in its package comment.
const (
	jobOverhead   = 4 << 20
	qcow2Overhead = 6 << 20
)

// plan is how a job will use memory, fixed once the virtual size is known.
type plan struct {
	workers, window int
	qcow2           qcow2.Options
	// For uploads.
	outputMax   int64 // the largest the output can be: it fixes the part grid
	partSize    int64
	concurrency int
	memory      int64 // bytes, all of the above together
}

func (j *run) planFor(virtual int64, qo qcow2.Options) (plan, error) {
	s := &j.s
	p := plan{workers: s.Workers, qcow2: qo, outputMax: virtual, concurrency: s.Upload.Concurrency}
	if s.Format == "qcow2" {
		if n, err := qcow2.MaxSize(qo); err == nil {
			p.outputMax = n
		}
	}
	if s.Kind() == ToBucket {
		var err error
		if p.partSize, err = upload.PlanPartSize(p.outputMax, s.Upload.PartSize); err != nil {
			return p, &SpecError{fmt.Errorf("--part-size: %w", err)}
		}
		if !j.concurrencyChosen {
			// Large parts (a disk of hundreds of GiB) go fewer at a time,
			// so that the buffers stay within DefaultPartsMemory.
			p.concurrency = max(1, min(p.concurrency, int(DefaultPartsMemory/p.partSize)-1))
		}
	}
	p.size(s)
	return p, nil
}

// size computes the memory of the plan as it stands.
func (p *plan) size(s *Spec) {
	p.window = 2*p.workers + 2
	bs := int64(s.BlockSize)
	m := int64(jobOverhead) + int64(p.window)*bs
	if s.IsRemote() {
		m += remote.Options{}.CacheBytes() // the read cache of a remote source
	}
	if s.Format == "qcow2" {
		m += qcow2Overhead
		if p.qcow2.Compression != "" {
			m += int64(p.window) * bs // a compressed copy beside each block
		}
	}
	if s.Kind() == ToBucket {
		m += upload.PartMemory(p.partSize, p.concurrency)
	}
	p.memory = m
}

// fit lowers the plan's parallelism until its share fits in the budget
// (uploads first: parts are the large buffers), or refuses the job when
// even one worker and one part in flight do not fit.
func (j *run) fit(p *plan) error {
	total := j.env.Budget.Total()
	wantWorkers, wantConc := p.workers, p.concurrency
	want := p.memory
	for p.memory > total && p.concurrency > 1 {
		p.concurrency--
		p.size(&j.s)
	}
	for p.memory > total && p.workers > 1 {
		p.workers--
		p.size(&j.s)
	}
	if p.memory > total {
		return &SpecError{fmt.Errorf("%s needs at least %s of memory (blocks of %s, %s); the budget (--memory) is %s: raise --memory, or lower --block-size or --part-size",
			j.s.shown(), units.Bytes(p.memory), units.Bytes(int64(j.s.BlockSize)), partsWords(p), units.Bytes(total))}
	}
	if p.workers != wantWorkers || p.concurrency != wantConc {
		msg := fmt.Sprintf("memory: the job wants %s, the budget (--memory) is %s: running with %d workers", units.Bytes(want), units.Bytes(total), p.workers)
		if j.s.Kind() == ToBucket {
			msg += fmt.Sprintf(" and %d parts in flight", p.concurrency)
		}
		j.notice(msg)
	}
	return nil
}

// Plan is how a job writes its output, as planned once the source is open
// and sized (and, in a batch, fitted into the budget): what a dry run
// tells.
type Plan struct {
	Format string `json:"output_format"`
	// QCOW2 output: its compat, cluster size and when it compresses.
	QCOW2Compat string `json:"qcow2_compat,omitempty"`
	ClusterSize int    `json:"cluster_size,omitempty"`
	Compress    string `json:"compress,omitempty"`
	Compression string `json:"compression,omitempty"`
	// OutputMax is the largest the output can be: the virtual size for
	// RAW, the QCOW2 of every cluster.
	OutputMax        int64 `json:"output_max_bytes"`
	SystemDiskSizeGB int64 `json:"system_disk_size_gb"`
	Workers          int   `json:"workers"`
	BlockSize        int   `json:"block_size"`
	// An upload: its part size, the parts of the largest output, the
	// parts in flight.
	PartSize    int64 `json:"part_size,omitempty"`
	Parts       int   `json:"parts,omitempty"`
	Concurrency int   `json:"upload_concurrency,omitempty"`
	// Memory is the job's share: blocks in flight, parts, tables.
	Memory int64 `json:"memory"`
	// Checked says what a dry run checked and found as it should be
	// (the store, the API), a line each.
	Checked []string `json:"checked,omitempty"`
}

// public is the plan as Result.Plan tells it.
func (p *plan) public(s *Spec, diskGB int64) *Plan {
	out := &Plan{Format: s.Format, OutputMax: p.outputMax, SystemDiskSizeGB: diskGB, Workers: p.workers, BlockSize: s.BlockSize, Memory: p.memory}
	if s.Format == "qcow2" {
		out.QCOW2Compat, out.ClusterSize, out.Compress, out.Compression = p.qcow2.Compat, p.qcow2.ClusterSize, s.QCOW2.Compress, p.qcow2.Compression
	}
	if p.partSize > 0 {
		out.PartSize, out.Parts, out.Concurrency = p.partSize, upload.PlanParts(p.outputMax, p.partSize), p.concurrency
	}
	return out
}

func partsWords(p *plan) string {
	if p.partSize == 0 {
		return "no upload"
	}
	return fmt.Sprintf("upload parts of %s", units.Bytes(p.partSize))
}
