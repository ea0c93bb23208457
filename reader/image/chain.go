package image

import (
	"errors"
	"fmt"
)

// ChainError reports a backing chain (backing files, parents, delta disks)
// that loops back on itself or is longer than this process may open. Every
// level of the chain passes it up unchanged (see WrapChain), so the message
// stays one short line naming the first and the offending file, whatever
// the depth.
type ChainError struct {
	// First is the image the chain starts from.
	First string
	// By is the file that names Repeat (a loop), or the last file opened
	// before the limit (a chain too long).
	By string
	// Repeat is the file named a second time; empty for a chain too long.
	Repeat string
	// Index is where Repeat first appears in the chain, from 1.
	Index int
	// Depth is the number of files in the chain when it stopped.
	Depth int
	// Limit is the open-file limit (RLIMIT_NOFILE) when that stopped the
	// chain, else 0.
	Limit uint64
	// Err is ErrCorrupt for a loop, ErrUnsupported for a chain too long.
	Err error
}

func (e *ChainError) Error() string {
	if e.Repeat != "" {
		return fmt.Sprintf("%s: backing chain loops: %s names %s, which is file %d of the chain already", e.First, e.By, e.Repeat, e.Index)
	}
	if e.Limit > 0 {
		return fmt.Sprintf("%s: backing chain of more than %d files: the open-file limit (ulimit -n %d) allows no more; the last file opened is %s", e.First, e.Depth, e.Limit, e.By)
	}
	return fmt.Sprintf("%s: backing chain of more than %d files (the most this reader follows); the last file opened is %s", e.First, MaxChainDepth, e.By)
}

func (e *ChainError) Unwrap() error { return e.Err }

// WrapChain adds context to an error from opening a backing file, parent or
// extent, unless it is a ChainError: that one already says everything in
// one line and goes up the chain as it is.
func WrapChain(err error, format string, args ...any) error {
	var ce *ChainError
	if errors.As(err, &ce) {
		return ce
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
