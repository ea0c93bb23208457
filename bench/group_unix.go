//go:build unix

package bench

import (
	"os/exec"
	"syscall"
)

// ownGroup runs cmd in a process group of its own, killed whole when its
// context ends.
func ownGroup(cmd *exec.Cmd) {
	detach(cmd)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// detach runs cmd in a process group of its own, so that a ctrl-C at the
// terminal reaches us and not it: we stop it ourselves, last.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
