package main

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// stopSignals stop a run the way Ctrl-C does: the output is cleaned up and
// the exit code is 130. On Windows, SIGTERM stands for closing the console
// window, logging off and shutting down.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

// catchSIGPIPE does nothing: Windows has no SIGPIPE, a write to a closed
// pipe fails with ERROR_BROKEN_PIPE or ERROR_NO_DATA.
func catchSIGPIPE() {}

// isBrokenPipe tells a write to a pipe nobody reads any more.
func isBrokenPipe(err error) bool {
	return errors.Is(err, windows.ERROR_BROKEN_PIPE) || errors.Is(err, windows.ERROR_NO_DATA) || errors.Is(err, syscall.EPIPE)
}

var getCompressedFileSize = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetCompressedFileSizeW")
