package job

import (
	"io/fs"
	"unsafe"

	"golang.org/x/sys/windows"
)

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
