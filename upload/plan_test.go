package upload

import (
	"testing"
)

func TestPlanPartSize(t *testing.T) {
	for _, c := range []struct{ hint, override, want int64 }{
		{0, 0, 8 << 20},
		{40 << 30, 0, 8 << 20},
		{80 << 30, 0, 16 << 20},
		{500 << 30, 0, 64 << 20},
		{505 << 30, 0, 64 << 20},
		{1 << 30, 5 << 20, 5 << 20},
	} {
		got, err := PlanPartSize(c.hint, c.override)
		if err != nil || got != c.want {
			t.Errorf("PlanPartSize(%d, %d) = %d, %v; want %d", c.hint, c.override, got, err, c.want)
		}
		if got*MaxParts < c.hint {
			t.Errorf("PlanPartSize(%d): %d parts of %d do not suffice", c.hint, MaxParts, got)
		}
	}
	for _, c := range []struct{ hint, override int64 }{{1 << 30, 4 << 20}, {1 << 30, 6 << 30}, {500 << 30, 32 << 20}} {
		if _, err := PlanPartSize(c.hint, c.override); err == nil {
			t.Errorf("PlanPartSize(%d, %d): no error", c.hint, c.override)
		}
	}
}

func TestObjectURLs(t *testing.T) {
	u, _ := urlParse("https://s3.cn-north-1.jdcloud-oss.com")
	if got, want := objectURL(u, false, "b", "dir/disk 1.raw"), "https://b.s3.cn-north-1.jdcloud-oss.com/dir/disk%201.raw"; got != want {
		t.Errorf("virtual hosted: %s, want %s", got, want)
	}
	if got, want := objectURL(intranet(u), false, "b", "k"), "https://b.s3-internal.cn-north-1.jdcloud-oss.com/k"; got != want {
		t.Errorf("intranet: %s, want %s", got, want)
	}
	if got, want := objectURL(u, true, "b", "k"), "https://s3.cn-north-1.jdcloud-oss.com/b/k"; got != want {
		t.Errorf("path style: %s, want %s", got, want)
	}
	if r := jdcloudRegionOf("s3-internal.cn-east-2.jdcloud-oss.com"); r != "cn-east-2" {
		t.Errorf("region %q", r)
	}
}
