//go:build unix

package image

import "golang.org/x/sys/unix"

// FileLimit is the soft limit on open files of this process (RLIMIT_NOFILE),
// 0 when unknown.
func FileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}
