package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"vmimport/check"
	"vmimport/job"
	"vmimport/reader/image"
)

// TestPermanent: what fails once and for good, and what is retried.
func TestPermanent(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"bad setting", &job.SpecError{Err: errors.New("--block-size 3")}, true},
		{"unreadable image", &job.InputError{Err: errors.New("open x: no such file")}, true},
		{"corrupt mid-pass", fmt.Errorf("converting x: %w", fmt.Errorf("%w: L2 table at 0x10000", image.ErrCorrupt)), true},
		{"unsupported", fmt.Errorf("x: %w", image.ErrUnsupported), true},
		{"import rule", fmt.Errorf("x: %w", check.ErrRule), true},
		{"import refused", &job.ImportError{Err: errors.New("400 OUT_OF_RANGE")}, true},
		{"network", errors.New("uploading part 7: connection reset by peer"), false},
		{"server", fmt.Errorf("completing the upload: %w", errors.New("500 InternalError")), false},
		{"cancelled", context.Canceled, false},
		{"none", nil, false},
	} {
		if got := Permanent(c.err); got != c.want {
			t.Errorf("%s: Permanent(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
