package guestfs

import (
	"bytes"
	"fmt"
	"io"
)

// ReadFull reads len(p) bytes at off, all of which must lie inside size.
func ReadFull(d io.ReaderAt, p []byte, off, size int64) error {
	if off < 0 || off > size || int64(len(p)) > size-off {
		return fmt.Errorf("%d bytes at offset %d pass the end (%d)", len(p), off, size)
	}
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// uuidString formats a big-endian UUID (ext4, xfs, btrfs, swap).
func uuidString(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// IsBootSector reports whether sector 0 is a file system's boot sector
// (NTFS, FAT) rather than an MBR: an unpartitioned disk.
func IsBootSector(sec []byte) bool {
	return bytes.Equal(sec[3:11], []byte("NTFS    ")) || bytes.Equal(sec[82:87], []byte("FAT32")) ||
		bytes.Equal(sec[54:59], []byte("FAT12")) || bytes.Equal(sec[54:59], []byte("FAT16")) ||
		bytes.Equal(sec[3:11], []byte("EXFAT   "))
}
