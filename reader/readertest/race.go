//go:build race

package readertest

// Race is set when the race detector is on: the full suite's hundreds of
// MiB of random reads then take minutes for compressed formats.
const Race = true
