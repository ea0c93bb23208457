package main

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"unsafe"

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

// allocatedBytes is the space a file takes on disk: its compressed or
// sparse size (GetCompressedFileSizeW; 0xFFFFFFFF with an error is its
// failure, INVALID_FILE_SIZE).
func allocatedBytes(path string, _ fs.FileInfo) (int64, bool) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil || getCompressedFileSize.Find() != nil {
		return 0, false
	}
	var high uint32
	low, _, err := getCompressedFileSize.Call(uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&high)))
	if uint32(low) == 0xFFFFFFFF && err != windows.ERROR_SUCCESS {
		return 0, false
	}
	return int64(high)<<32 | int64(uint32(low)), true
}
