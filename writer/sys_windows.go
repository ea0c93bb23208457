package writer

import (
	"os"

	"golang.org/x/sys/windows"
)

// startWriteback does nothing: Windows has no sync_file_range; the fsync at
// Commit (FlushFileBuffers) writes everything.
func startWriteback(*os.File, int64, int64) {}

// markSparse makes f a sparse file (FSCTL_SET_SPARSE), so that the zero runs
// the writer seeks over take no space on NTFS, as holes do elsewhere. A file
// system without sparse files (FAT, exFAT) refuses: the zeros are then
// written out by the file system, and the output is still right.
func markSparse(f *os.File) {
	var n uint32
	_ = windows.DeviceIoControl(windows.Handle(f.Fd()), windows.FSCTL_SET_SPARSE, nil, 0, nil, 0, &n, nil)
}
