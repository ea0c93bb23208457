// Package units formats byte counts for people, the same way everywhere.
package units

import "fmt"

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
