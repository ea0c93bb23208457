package check

import (
	"errors"
	"strings"
	"testing"
)

func TestDiskSize(t *testing.T) {
	cases := []struct {
		virtual   int64
		requested int64
		want      int64
		err       string
	}{
		{1 << 20, 0, 40, ""},
		{40 * GiB, 0, 40, ""},
		{40*GiB + 1, 0, 50, ""},
		{4 * GiB, 50, 50, ""},
		{4 * GiB, 45, 40, "not a multiple of 10; use 50"},
		{4 * GiB, 30, 40, "outside 40..500; use 40"},
		{4 * GiB, 510, 40, "outside 40..500"},
		{100 * GiB, 60, 100, "below the image's virtual size (100 GiB); use 100"},
		{500 * GiB, 0, 500, ""},
		{500*GiB + 1, 0, 510, "above the cloud's 500 GiB limit"},
		{1 << 62, 0, 0, "above the cloud's 500 GiB limit"},
	}
	for _, c := range cases {
		got, err := DiskSize(c.virtual, c.requested)
		if c.err == "" {
			if err != nil || got != c.want {
				t.Errorf("DiskSize(%d, %d) = %d, %v; want %d", c.virtual, c.requested, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrRule) {
			t.Errorf("DiskSize(%d, %d) error = %v; want %q", c.virtual, c.requested, err, c.err)
		}
	}
}
