// Command convert reads a virtual disk image (QCOW2, VMDK, VHD, VHDX, VDI,
// OVA, RAW), checks it against the target cloud's import rules and writes
// it, converted, to a file, to stdout or to an object store, and on into the
// cloud's image import. See `convert --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"vmimport/internal/safetext"
)

func main() {
	// INT, TERM and HUP (the terminal went away) all stop the run the same
	// way: the output is cleaned up and the exit code is 130. The cause
	// names the signal for the last message.
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	go func() { cancel(interrupted{<-sigs}) }()
	catchSIGPIPE()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	code := exitCode(ctx, err)
	if err != nil && code != exitOK && !logged(err) {
		for _, m := range messages(ctx, code, err) {
			fmt.Fprintf(os.Stderr, "convert: %s\n", safetext.Escape(m))
		}
	}
	os.Exit(code)
}
