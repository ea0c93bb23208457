//go:build !linux && !windows

package writer

import "os"

// startWriteback does nothing where there is no sync_file_range (macOS, the
// BSDs): the fsync at Commit writes everything.
func startWriteback(*os.File, int64, int64) {}

// markSparse does nothing: APFS, HFS+ and UFS leave a hole where a write
// seeks past the end.
func markSparse(*os.File) {}
