//go:build unix

package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// stopSignals stop a run the way Ctrl-C does: the output is cleaned up and
// the exit code is 130. HUP is the terminal going away.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// catchSIGPIPE makes a write to a pipe whose reader went away (| head) fail
// with EPIPE instead of killing the process silently: the run says so.
func catchSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

// isBrokenPipe tells a write to a pipe nobody reads any more.
func isBrokenPipe(err error) bool { return errors.Is(err, syscall.EPIPE) }
