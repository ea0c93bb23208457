// Command convert reads a virtual disk image (QCOW2, RAW, ...), checks it
// against the target cloud's import rules and writes it, converted, to a
// file, to stdout or to an object store. See `convert --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	// INT, TERM and HUP (the terminal went away) all stop the run the same
	// way: the output is cleaned up and the exit code is 130.
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	catchSIGPIPE()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	// Read the exit code before stop: stop cancels ctx, which would make
	// every failure look like an interrupt.
	code := exitCode(ctx, err)
	stop()
	if err != nil && code != exitOK {
		fmt.Fprintf(os.Stderr, "convert: %s\n", message(code, err))
	}
	os.Exit(code)
}
