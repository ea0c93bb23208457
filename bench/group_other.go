//go:build !unix

package bench

import "os/exec"

// ownGroup: process groups are a Unix thing; elsewhere the command alone is
// killed when its context ends.
func ownGroup(*exec.Cmd) {}

// detach: no process groups here; the command shares our console.
func detach(*exec.Cmd) {}
