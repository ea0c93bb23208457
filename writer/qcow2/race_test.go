//go:build race

package qcow2_test

// raceEnabled trims the slowest checks under the race detector, which makes
// compression and the QCOW2 reader several times slower.
const raceEnabled = true
