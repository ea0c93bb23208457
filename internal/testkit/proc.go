package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Writing reports whether process pid has a file open in dir, other than
// the ones named in except, with bytes in it: a conversion's output has no
// name while it is written (O_TMPFILE), so a test that waits for the
// output to start finds it among the process's open files (Linux's /proc).
func Writing(pid int, dir string, except ...string) bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		p := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			continue
		}
		skip := false
		for _, e := range except {
			if filepath.Base(target) == e {
				skip = true
			}
		}
		if fi, err := os.Stat(p); !skip && err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}
