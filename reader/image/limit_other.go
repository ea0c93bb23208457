//go:build !unix

package image

// FileLimit is the soft limit on open files of this process: 0, unknown,
// where there is no RLIMIT_NOFILE (Windows has no such small limit).
func FileLimit() uint64 { return 0 }
