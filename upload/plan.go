package upload

import "fmt"

// Multipart limits of S3 and of the target cloud's OSS.
const (
	MinPartSize int64 = 5 << 20
	MaxPartSize int64 = 5 << 30
	MaxParts          = 10000
	// autoMinPart is the smallest part size picked automatically: fine
	// enough to copy most zero runs of a sparse disk server-side, coarse
	// enough to keep requests few.
	autoMinPart int64 = 8 << 20
	// headPartSize is the size of part 1, which is held in memory until
	// Commit patches the head into it: at least the 5 MiB of a part that
	// is not the last, and more than any head (a QCOW2 header is one
	// cluster, at most 2 MiB).
	headPartSize int64 = 8 << 20
	// zeroSeed is how many zeros cross the network to build the zero object;
	// the rest is copied server-side.
	zeroSeed int64 = 8 << 20
)

// PlanPartSize picks the part size for an output of at most sizeHint bytes:
// the smallest power of two from 8 MiB up with which 10,000 parts suffice
// (64 MiB for 500 GiB). A non-zero override is checked instead. The caller
// plans once and gives the result to Start as Options.PartSize.
func PlanPartSize(sizeHint, override int64) (int64, error) {
	if sizeHint < 0 {
		return 0, fmt.Errorf("negative size %d", sizeHint)
	}
	if override != 0 {
		if err := checkPartSize(sizeHint, override); err != nil {
			return 0, err
		}
		return override, nil
	}
	p := autoPartSize(sizeHint)
	if p > MaxPartSize {
		return 0, fmt.Errorf("an output of %d GiB does not fit in 10,000 parts of 5 GiB", sizeHint>>30)
	}
	return p, nil
}

func autoPartSize(sizeHint int64) int64 {
	p := autoMinPart
	for int64(gridParts(sizeHint, headPart(p), p)) > MaxParts {
		p *= 2
	}
	return p
}

// headPart is the size of part 1 in a grid of parts of size p.
func headPart(p int64) int64 { return min(p, headPartSize) }

// PlanParts is the number of parts of an output of size bytes in parts of
// p bytes (part 1 is smaller: see headPart).
func PlanParts(size, p int64) int { return int(gridParts(size, headPart(p), p)) }

// PartMemory is the memory an upload with parts of size p and concurrency
// parts in flight holds for them: those in flight, the one being filled,
// and part 1, held until Commit.
func PartMemory(p int64, concurrency int) int64 {
	return int64(concurrency+1)*p + headPart(p)
}

// checkPartSize checks a part size is allowed and gives an output of up to
// sizeHint bytes at most 10,000 parts.
func checkPartSize(sizeHint, p int64) error {
	if p < MinPartSize || p > MaxPartSize {
		return fmt.Errorf("part size %d: must be between 5 MiB and 5 GiB", p)
	}
	if n := gridParts(sizeHint, headPart(p), p); n > MaxParts {
		return fmt.Errorf("part size %d MiB: an output of up to %d MiB needs %d parts, more than the 10,000 allowed; use at least %d MiB", p>>20, sizeHint>>20, n, autoPartSize(sizeHint)>>20)
	}
	return nil
}
