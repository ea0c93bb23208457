package image

import "testing"

func TestRegions(t *testing.T) {
	var r Regions
	r.Add(0, 512, "header")
	r.Add(4096, 1<<20, "table")  // [4096, 1052672)
	r.Add(8192, 512, "inner")    // inside the table
	r.Add(2<<20, 0, "empty")     // ignored
	r.Add(3<<20, 4096, "footer") // [3145728, 3149824)
	r.Seal()
	cases := []struct {
		start, n int64
		want     string
	}{
		{0, 1, "header"},
		{511, 1, "header"},
		{512, 3584, ""},
		{512, 3585, "table"},
		{1052672, 4096, ""},
		{1052671, 1, "table"},
		{9000, 1, "table"}, // the long table region before the inner one
		{3<<20 - 1, 2, "footer"},
		{3<<20 + 4096, 1 << 30, ""},
		{5, 0, ""},
	}
	for _, c := range cases {
		got, ok := r.Overlap(c.start, c.n)
		if c.want == "" && ok || c.want != "" && (!ok || got.What != c.want && !(c.want == "table" && got.What == "inner")) {
			t.Errorf("Overlap(%d, %d) = %v, %v; want %q", c.start, c.n, got, ok, c.want)
		}
	}
}
