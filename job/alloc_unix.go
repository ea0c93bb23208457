//go:build unix

package job

import (
	"io/fs"
	"syscall"
)

// allocatedBytes is the space a file takes on disk (holes excluded).
func allocatedBytes(_ string, fi fs.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int64(st.Blocks) * 512, true
}
