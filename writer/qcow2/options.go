// Package qcow2 writes the ordered block stream as a QCOW2 image in one
// pass, on any writer.Target, without seeking back:
//
//	cluster 0          header (reserved with Target.Skip, handed to Commit last)
//	...                data clusters and compressed clusters, in virtual order,
//	                   with each L2 table and each refcount block appended as
//	                   soon as the stream has passed what it covers
//	end                the last refcount blocks, the refcount table, the L1
//	                   table (cluster aligned, contiguous)
//
// The QCOW2 spec (qemu docs/interop/qcow2.txt) only asks for the header in
// the first cluster and for cluster-aligned, contiguous tables; where the
// tables sit is free. Compressed clusters are packed byte after byte as qemu
// packs them (descriptors count 512-byte sectors); while a host cluster of
// compressed data is being filled, whole clusters laid out after it wait in
// a bounded queue, so switching between compressible and incompressible
// data does not waste the rest of a cluster each time.
//
// Memory does not grow with the disk beyond the L1 table (8 bytes per
// cluster_size²/8 bytes of virtual disk) and the refcount table (8 bytes per
// cluster_size²/2 bytes of output): 1,600 + 400 bytes per 100 GiB with 64 KiB
// clusters (1.6 KiB for a 100 GiB disk, 400 bytes per 100 GiB written). The
// rest is fixed: a 1 MiB write buffer, the queue (4 MiB, or one cluster if
// larger), one L2 table, two or three refcount blocks, the header cluster.
// With 512-byte clusters the L1 table is 25 MiB per 100 GiB (qemu limits
// such images to 128 GiB); that is why 64 KiB is the default.
//
// Blocks must be cluster aligned: the stream's block size must be a multiple
// of the cluster size (both are powers of two, so: at least the cluster
// size). See BlockSize.
//
// A QCOW2 image cannot go to a pipe: its header is known only at the end.
// NewEncoder refuses a *writer.Stream target with writer.ErrHeadOnStream.
package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
)

// Compat values.
const (
	Compat11  = "1.1"  // QCOW2 version 3, the default
	Compat010 = "0.10" // QCOW2 version 2, for old importers
)

// Compression values.
const (
	CompressNone = ""
	CompressZlib = "zlib" // raw deflate with a 4 KiB window, as qemu writes and reads it
	CompressZstd = "zstd" // sets compression_type and its incompatible bit; needs compat 1.1
)

// Limits.
const (
	MinClusterSize     = 512
	MaxClusterSize     = 2 << 20
	DefaultClusterSize = 64 << 10

	// maxL1Bytes and maxRefTableBytes are qemu's implementation limits
	// (QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE): an image beyond them does
	// not open in qemu.
	maxL1Bytes       = 32 << 20
	maxRefTableBytes = 8 << 20

	refcountOrder = 4 // 16-bit refcounts
	maxRefcount   = 1<<16 - 1
)

// ErrOptions is wrapped by every error about invalid options.
var ErrOptions = errors.New("qcow2: invalid options")

// Options shape the output image. The zero value, with VirtualSize set,
// means compat 1.1, 64 KiB clusters, no compression.
type Options struct {
	// Compat is "1.1" (version 3, default) or "0.10" (version 2).
	Compat string
	// ClusterSize is a power of two from 512 B to 2 MiB (default 64 KiB).
	ClusterSize int
	// Compression is "" (none), "zlib" or "zstd".
	Compression string
	// Choose, if set (with Compression), tells per data block, by its
	// virtual offset, whether to compress its clusters; the others are
	// stored plain. Nil compresses every block. It is called from the
	// stream's workers, concurrently and out of order; the output is
	// deterministic for the same answers (see job's --compress auto).
	Choose func(off int64) bool
	// VirtualSize is the size of the disk in bytes; the stream must deliver
	// exactly that many.
	VirtualSize int64
}

func (o Options) withDefaults() (Options, error) {
	if o.Compat == "" {
		o.Compat = Compat11
	}
	if o.ClusterSize == 0 {
		o.ClusterSize = DefaultClusterSize
	}
	switch o.Compat {
	case Compat11, Compat010:
	default:
		return o, fmt.Errorf("%w: compat %q: want %q or %q", ErrOptions, o.Compat, Compat11, Compat010)
	}
	if o.ClusterSize < MinClusterSize || o.ClusterSize > MaxClusterSize || o.ClusterSize&(o.ClusterSize-1) != 0 {
		return o, fmt.Errorf("%w: cluster size %d is not a power of two from 512 B to 2 MiB", ErrOptions, o.ClusterSize)
	}
	switch o.Compression {
	case CompressNone, CompressZlib:
	case CompressZstd:
		if o.Compat == Compat010 {
			return o, fmt.Errorf("%w: zstd compression needs compat 1.1 (QCOW2 version 3); use zlib for compat 0.10", ErrOptions)
		}
	default:
		return o, fmt.Errorf("%w: compression %q: want zlib or zstd", ErrOptions, o.Compression)
	}
	if o.VirtualSize < 0 {
		return o, fmt.Errorf("%w: negative virtual size %d", ErrOptions, o.VirtualSize)
	}
	g := o.geometry()
	if g.l1Size*8 > maxL1Bytes {
		return o, fmt.Errorf("%w: a virtual size of %d bytes needs an L1 table of %d bytes with %d-byte clusters, over qemu's limit of %d: use larger clusters",
			ErrOptions, o.VirtualSize, g.l1Size*8, o.ClusterSize, maxL1Bytes)
	}
	if _, rtClusters := g.maxLayout(); rtClusters*g.cs > maxRefTableBytes {
		return o, fmt.Errorf("%w: a virtual size of %d bytes may need a refcount table of %d bytes with %d-byte clusters, over qemu's limit of %d: use larger clusters",
			ErrOptions, o.VirtualSize, rtClusters*g.cs, o.ClusterSize, maxRefTableBytes)
	}
	return o, nil
}

// Validate checks the options and fills in the defaults.
func (o Options) Validate() (Options, error) { return o.withDefaults() }

// geometry is what follows from the cluster size and the virtual size.
type geometry struct {
	cs        int64 // cluster size
	cbits     uint  // log2(cs)
	l2Entries int64 // entries per L2 table
	rbEntries int64 // entries per refcount block
	clusters  int64 // virtual clusters
	l1Size    int64 // L1 entries
}

func (o Options) geometry() geometry {
	cs := int64(o.ClusterSize)
	g := geometry{
		cs:        cs,
		cbits:     uint(bits.TrailingZeros64(uint64(cs))),
		l2Entries: cs / 8,
		rbEntries: cs * 8 / (1 << refcountOrder),
	}
	g.clusters = ceilDiv(o.VirtualSize, cs)
	g.l1Size = ceilDiv(g.clusters, g.l2Entries)
	return g
}

// l1Clusters is the number of clusters the L1 table takes (none for an
// empty disk: qemu would count such a cluster as leaked).
func (g geometry) l1Clusters() int64 { return ceilDiv(g.l1Size*8, g.cs) }

// tail solves the layout of the end of the file: given that host clusters
// [0, p) are written and refcount blocks below firstOpen are written too,
// it returns how many more refcount blocks are needed (nrb) and how many
// clusters the refcount table takes, so that the refcount blocks cover
// every cluster up to the end of the file, themselves, the refcount table
// and the L1 table included.
func (g geometry) tail(p, firstOpen int64) (nrb, rtClusters int64) {
	l1 := g.l1Clusters()
	nrb = 1
	for {
		rtClusters = ceilDiv((firstOpen+nrb)*8, g.cs)
		end := p + nrb + rtClusters + l1
		need := max(1, ceilDiv(end, g.rbEntries)-firstOpen)
		if need <= nrb {
			return nrb, rtClusters
		}
		nrb = need
	}
}

// maxLayout returns the number of clusters of the largest file these
// options can produce, and the refcount table clusters it takes.
//
// Every data cluster adds at most one host cluster (a compressed cluster is
// smaller than a cluster, so it ends at most one cluster further on; padding
// never starts a new cluster), every L2 table and refcount block one, and
// the file is dense: every host cluster up to the end is in use.
func (g geometry) maxLayout() (clusters, rtClusters int64) {
	p := 1 + g.clusters + g.l1Size // header, data, L2 tables
	// Refcount blocks that fill up during the stream are written when
	// the stream passes them; whatever the interleaving, their number is
	// ceil(end/rbEntries), and tail finds that end.
	nrb, rt := g.tail(p, 0)
	return p + nrb + rt + g.l1Clusters(), rt
}

// MaxSize is the largest file, in bytes, that an Encoder with these options
// can write, for any content of the disk (every cluster holding data that
// does not compress). An upload can plan its part grid on it. The real file
// is usually much smaller: zero clusters take no space.
func MaxSize(o Options) (int64, error) {
	o, err := o.withDefaults()
	if err != nil {
		return 0, err
	}
	g := o.geometry()
	n, _ := g.maxLayout()
	return n * g.cs, nil
}

// BlockSize returns the stream block size to use for these options: the
// wanted block size, raised to the cluster size if it is smaller. The
// encoder needs every data block to be whole clusters.
func BlockSize(want, clusterSize int) int {
	if want == 0 {
		want = 1 << 20 // the stream's default
	}
	if clusterSize == 0 {
		clusterSize = DefaultClusterSize
	}
	return max(want, clusterSize)
}

// HeaderSize is the virtual size the image records for a stream of
// virtualSize bytes: rounded up to a multiple of 512 bytes, because qemu
// counts disks in sectors (qemu-img convert rounds up the same way).
func HeaderSize(virtualSize int64) int64 { return (virtualSize + 511) &^ 511 }

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
