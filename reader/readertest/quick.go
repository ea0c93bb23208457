package readertest

import (
	"testing"

	"vmimport/reader/image"
)

// CheckFast runs Check, or CheckQuick when the race detector is on or the
// tests run with -short.
func CheckFast(t *testing.T, im image.Image, rawPath string) {
	t.Helper()
	if Race || testing.Short() {
		CheckQuick(t, im, rawPath)
		return
	}
	Check(t, im, rawPath)
}

// CheckQuick makes the same kinds of checks as Check with far fewer bytes:
// one sequential pass, 30 random reads, 4 goroutines of 10 concurrent reads
// of at most 256 KiB, the reads at and across the end, and the allocation
// map. It keeps -race runs of compressed formats within seconds.
func CheckQuick(t *testing.T, im image.Image, rawPath string) {
	t.Helper()
	check(t, im, rawPath, effort{random: 30, randomMax: 256 << 10, workers: 4, perWorker: 10, concurrentMax: 256 << 10})
}
