package vhdx

import (
	"encoding/binary"
	"fmt"
	"io"

	"vmimport/reader/image"
)

// Log replay (MS-VHDX 2.3.3). A VHDX that was not closed cleanly holds, in
// its circular log, writes to metadata (and sometimes data) that the file
// does not have yet. They are replayed here in memory: the file is never
// written; the image is read through an overlay holding the replayed pages.

const logSector = 4096

// maxLogLength bounds the log this reader replays; Hyper-V and qemu make
// 1 MiB logs.
const maxLogLength = 256 << 20

// maxOverlayPages bounds the memory a replay may take (4 KiB pages, 1 GiB):
// far above what a real log (1 MiB by default) can describe.
const maxOverlayPages = 1 << 18

type logEntry struct {
	off  int64 // offset in the log
	hdr  *logEntryHeader
	data []byte // the whole entry
	// Last and flushed file offsets from the header.
	flushed, last uint64
}

// overlay is the file as the replayed log leaves it: replayed 4 KiB pages
// over the original bytes, and a size that may have grown.
type overlay struct {
	base  io.ReaderAt
	baseN int64
	size  int64
	pages map[int64][]byte // page index -> 4096 bytes
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vhdx: negative offset")
	}
	n := 0
	for n < len(p) && off+int64(n) < o.size {
		pos := off + int64(n)
		k := int(min(int64(len(p)-n), logSector-pos%logSector, o.size-pos))
		if pg, ok := o.pages[pos/logSector]; ok {
			copy(p[n:n+k], pg[pos%logSector:])
		} else if pos < o.baseN {
			// Read the run of pages that are not replayed at once.
			end := pos + int64(k)
			for end < off+int64(len(p)) && end < o.baseN {
				if _, ok := o.pages[end/logSector]; ok {
					break
				}
				end = min(end+logSector-end%logSector, off+int64(len(p)), o.baseN)
			}
			k = int(end - pos)
			m, err := o.base.ReadAt(p[n:n+k], pos)
			if m < k {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return n + m, err
			}
		} else {
			clear(p[n : n+k])
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// replayLog finds the active sequence of the log and replays it into an
// overlay. It returns the number of entries replayed.
func (im *Image) replayLog() (int, error) {
	h := im.hdr
	logOff, logLen := int64(h.LogOffset), int64(h.LogLength)
	if logLen > maxLogLength {
		return 0, image.Unsupportedf(im.src.Path, format, logOff, "a log of %d bytes is larger than the %d this reader replays", logLen, maxLogLength)
	}
	// Candidate entries may overlap; checking each costs its length. The
	// budget keeps a crafted log from costing more than a few passes.
	budget := 4 * logLen
	entries := map[int64]*logEntry{}
	var head *logEntry
	b := make([]byte, 64)
	for pos := int64(0); pos < logLen; pos += logSector {
		if err := image.ReadFull(im.src.R, im.src.Size, b, logOff+pos, im.src.Path, format, "log entry"); err != nil {
			return 0, err
		}
		e, ok := parseLogEntryHeader(b)
		if !ok || e.LogGUID != h.LogGUID || e.EntryLength == 0 || e.EntryLength%logSector != 0 || int64(e.EntryLength) > logLen {
			continue
		}
		if budget -= int64(e.EntryLength); budget < 0 {
			return 0, image.Unsupportedf(im.src.Path, format, logOff+pos, "the log holds too many overlapping entries to check")
		}
		// The entry may wrap around the end of the circular log.
		data := make([]byte, e.EntryLength)
		first := min(int64(e.EntryLength), logLen-pos)
		if err := image.ReadFull(im.src.R, im.src.Size, data[:first], logOff+pos, im.src.Path, format, "log entry"); err != nil {
			return 0, err
		}
		if first < int64(e.EntryLength) {
			if err := image.ReadFull(im.src.R, im.src.Size, data[first:], logOff, im.src.Path, format, "log entry"); err != nil {
				return 0, err
			}
		}
		if crc(data, 4) != e.Checksum {
			continue
		}
		le := binary.LittleEndian
		ent := &logEntry{off: pos, hdr: e, data: data, flushed: le.Uint64(b[48:]), last: le.Uint64(b[56:])}
		entries[pos] = ent
		if head == nil || e.Seq > head.hdr.Seq {
			head = ent
		}
	}
	if head == nil {
		return 0, nil
	}
	// The active sequence runs from the head's tail to the head, each
	// entry right after the previous one with the next sequence number.
	var seq []*logEntry
	pos := int64(head.hdr.Tail)
	for {
		e, ok := entries[pos]
		if !ok || (len(seq) > 0 && e.hdr.Seq != seq[len(seq)-1].hdr.Seq+1) || len(seq) > len(entries) {
			return 0, im.corrupt(logOff+pos, "log sequence broken: no valid entry %d at log offset %d between the tail (%d) and the head (sequence %d at %d)",
				len(seq), pos, head.hdr.Tail, head.hdr.Seq, head.off)
		}
		seq = append(seq, e)
		if e == head {
			break
		}
		pos = (pos + int64(e.hdr.EntryLength)) % logLen
	}
	if head.flushed > uint64(im.src.Size) {
		return 0, im.corrupt(logOff+head.off+48, "the log says the file held %d bytes when it was written, it has %d (truncated?)", head.flushed, im.src.Size)
	}
	if head.last > uint64(image.MaxVirtualSize) {
		return 0, im.corrupt(logOff+head.off+56, "log's last file offset %d is beyond any sane file", head.last)
	}
	ov := &overlay{base: im.src.R, baseN: im.src.Size, size: max(im.src.Size, int64(head.last)), pages: map[int64][]byte{}}
	for _, e := range seq {
		if err := im.applyEntry(ov, e, logOff); err != nil {
			return 0, err
		}
	}
	im.src.R, im.src.Size, im.src.Fd = ov, ov.size, -1
	return len(seq), nil
}

// applyEntry replays the descriptors of one entry into the overlay.
func (im *Image) applyEntry(ov *overlay, e *logEntry, logOff int64) error {
	le := binary.LittleEndian
	n := int64(e.hdr.Descriptors)
	descEnd := 64 + 32*n
	if descEnd > int64(len(e.data)) {
		return im.corrupt(logOff+e.off+24, "log entry of %d bytes cannot hold %d descriptors", len(e.data), n)
	}
	dataSector := (descEnd + logSector - 1) / logSector * logSector
	zeroPage := make([]byte, logSector)
	put := func(fileOff int64, pg []byte) error {
		if len(ov.pages) >= maxOverlayPages {
			return image.Unsupportedf(im.src.Path, format, logOff+e.off, "log replay would hold more than %d pages in memory", maxOverlayPages)
		}
		ov.pages[fileOff/logSector] = pg
		return nil
	}
	for i := int64(0); i < n; i++ {
		d := e.data[64+32*i:]
		at := logOff + e.off + 64 + 32*i
		if le.Uint64(d[24:]) != e.hdr.Seq {
			return im.corrupt(at+24, "log descriptor %d has sequence number %d, its entry %d", i, le.Uint64(d[24:]), e.hdr.Seq)
		}
		fileOff := le.Uint64(d[16:])
		if fileOff%logSector != 0 || fileOff >= uint64(ov.size) {
			return im.corrupt(at+16, "log descriptor %d writes at file offset %d: not 4 KiB-aligned inside the %d-byte file", i, fileOff, ov.size)
		}
		switch string(d[:4]) {
		case "zero":
			length := le.Uint64(d[8:])
			if length%logSector != 0 || length > uint64(ov.size)-fileOff {
				return im.corrupt(at+8, "log zero descriptor %d of %d bytes at %d: not 4 KiB-aligned inside the file", i, length, fileOff)
			}
			if length/logSector > maxOverlayPages {
				return image.Unsupportedf(im.src.Path, format, at, "log zero descriptor of %d bytes is too large to replay in memory", length)
			}
			for o := int64(0); o < int64(length); o += logSector {
				if err := put(int64(fileOff)+o, zeroPage); err != nil {
					return err
				}
			}
		case "desc":
			if dataSector+logSector > int64(len(e.data)) {
				return im.corrupt(at, "log data descriptor %d has no data sector in its entry", i)
			}
			s := e.data[dataSector : dataSector+logSector]
			if string(s[:4]) != "data" || le.Uint32(s[4:]) != uint32(e.hdr.Seq>>32) || le.Uint32(s[4092:]) != uint32(e.hdr.Seq) {
				return im.corrupt(logOff+e.off+dataSector, "log data sector for descriptor %d lacks its signature or sequence number", i)
			}
			pg := make([]byte, logSector)
			copy(pg[:8], d[8:16])       // leading bytes
			copy(pg[8:4092], s[8:4092]) // 4084 bytes of data
			copy(pg[4092:], d[4:8])     // trailing bytes
			if err := put(int64(fileOff), pg); err != nil {
				return err
			}
			dataSector += logSector
		default:
			return im.corrupt(at, "log descriptor %d has signature %q, neither \"zero\" nor \"desc\"", i, d[:4])
		}
	}
	return nil
}
