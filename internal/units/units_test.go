package units

import "testing"

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 100 << 30: "100.0 GiB", 3 << 50: "3.0 PiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestRate(t *testing.T) {
	for _, c := range []struct {
		n    int64
		s    float64
		rate string
		took string
	}{
		{64 << 20, 2, "32.0 MiB/s", "2.0s (32.0 MiB/s)"},
		{1 << 30, 0.5, "2.0 GiB/s", "0.5s (2.0 GiB/s)"},
		{64 << 20, 0.099, "", "0.10s"},
		{64 << 20, 0.004, "", "0.00s"},
		{0, 3, "0 B/s", "3.0s (0 B/s)"},
	} {
		if got := Rate(c.n, c.s); got != c.rate {
			t.Errorf("Rate(%d, %g) = %q, want %q", c.n, c.s, got, c.rate)
		}
		if got := Took(c.n, c.s); got != c.took {
			t.Errorf("Took(%d, %g) = %q, want %q", c.n, c.s, got, c.took)
		}
	}
}
