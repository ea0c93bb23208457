// Package check holds the target cloud's import rules. This file has the
// size rules, which every conversion checks before writing a byte.
package check

import (
	"errors"
	"fmt"
)

// Limits of the ImportImage API's systemDiskSizeGB.
const (
	MinDiskGB  = 40
	MaxDiskGB  = 500
	StepDiskGB = 10
	GiB        = int64(1) << 30
)

// ErrRule is wrapped by every broken import rule.
var ErrRule = errors.New("import rule")

// ruleError is a broken rule told in its own words: it matches ErrRule
// without "import rule:" in front of every message.
type ruleError struct{ msg string }

func (e *ruleError) Error() string        { return e.msg }
func (e *ruleError) Is(target error) bool { return target == ErrRule }

func ruleErrorf(format string, args ...any) error {
	return &ruleError{fmt.Sprintf(format, args...)}
}

// VirtualGB is the virtual size rounded up to whole GiB.
func VirtualGB(virtual int64) int64 { return (virtual + GiB - 1) / GiB }

// SuggestDiskGB is the smallest importable system disk size that holds the
// virtual size: at least 40, a multiple of 10. It may exceed 500 for disks
// too large to import.
func SuggestDiskGB(virtual int64) int64 {
	gb := max(VirtualGB(virtual), MinDiskGB)
	return (gb + StepDiskGB - 1) / StepDiskGB * StepDiskGB
}

// DiskSize checks a requested system disk size (0: none given) against the
// virtual size and returns the size to use. Errors wrap ErrRule and say
// which value would be right; the caller names where the request came
// from (a flag, a manifest field).
func DiskSize(virtual, requestedGB int64) (int64, error) {
	suggest := SuggestDiskGB(virtual)
	if VirtualGB(virtual) > MaxDiskGB {
		return suggest, ruleErrorf("the virtual size %d bytes (%d GiB) is above the cloud's %d GiB limit for system disks: shrink the disk in the guest first", virtual, VirtualGB(virtual), MaxDiskGB)
	}
	if requestedGB == 0 {
		return suggest, nil
	}
	switch {
	case requestedGB < MinDiskGB || requestedGB > MaxDiskGB:
		return suggest, ruleErrorf("a system disk of %d GB is outside %d..%d; use %d", requestedGB, MinDiskGB, MaxDiskGB, suggest)
	case requestedGB%StepDiskGB != 0:
		up := (requestedGB + StepDiskGB - 1) / StepDiskGB * StepDiskGB
		return suggest, ruleErrorf("a system disk of %d GB is not a multiple of %d; use %d", requestedGB, StepDiskGB, max(up, suggest))
	case requestedGB < VirtualGB(virtual):
		return suggest, ruleErrorf("a system disk of %d GB is below the image's virtual size (%d GiB); use %d or more", requestedGB, VirtualGB(virtual), suggest)
	}
	return requestedGB, nil
}
