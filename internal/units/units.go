// Package units formats byte counts for people, and reads them, the same
// way everywhere.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// Bytes prints n in binary units: "512 B", "1.5 MiB", "4.0 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Parse reads a byte count "65536", "64k", "64KiB", "1M", "2MiB", "1G".
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"b", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (use bytes or a suffix k, M, G)", s)
	}
	return n * mult, nil
}

// MinRateSeconds is the shortest time a rate is told for: below it the
// clock's resolution and the start-up dominate, and a rate would be noise
// ("830128 MB/s").
const MinRateSeconds = 0.1

// Rate prints n bytes over seconds in binary units: "45.3 MiB/s"; "" for
// times under MinRateSeconds.
func Rate(n int64, seconds float64) string {
	if seconds < MinRateSeconds {
		return ""
	}
	return Bytes(int64(float64(n)/seconds)) + "/s"
}

// Took prints how long n bytes took, with their rate when the time is
// long enough to tell one: "1.4s (45.3 MiB/s)", "0.03s".
func Took(n int64, seconds float64) string {
	if r := Rate(n, seconds); r != "" {
		return fmt.Sprintf("%.1fs (%s)", seconds, r)
	}
	return fmt.Sprintf("%.2fs", seconds)
}
