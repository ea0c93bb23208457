package main

import (
	"os"
	"runtime/pprof"
)

// startCPUProfile profiles until the returned stop is called; for the
// hidden --cpuprofile flag used when measuring throughput.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
