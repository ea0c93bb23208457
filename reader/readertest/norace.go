//go:build !race

package readertest

// Race is set when the race detector is on.
const Race = false
