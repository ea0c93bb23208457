package vhd

// Finding the footer: at the end of the file, or a copy at its start.

import (
	"fmt"

	"vmimport/reader/image"
)

// readFooter finds a sound footer: the last 512 bytes, or the copy at
// offset 0 when the last one is damaged. Old Virtual PC versions wrote a
// 511-byte footer (without the last reserved byte) after fixed disks;
// footerLen says which was found.
func readFooter(src image.Source) (f *footer, warn string, footerLen, at int64, err error) {
	f, warn, at, err = readFooter512(src)
	if err == nil || src.Size < footerSize {
		return f, warn, footerSize, at, err
	}
	tail := make([]byte, footerSize)
	if image.ReadFull(src.R, src.Size, tail[:footerSize-1], src.Size-(footerSize-1), src.Path, format, "footer") != nil || string(tail[:8]) != "conectix" {
		return nil, "", 0, 0, err
	}
	f, fat, rule := parseFooter(tail)
	if rule != "" {
		return nil, "", 0, 0, image.Corruptf(src.Path, format, src.Size-(footerSize-1)+int64(fat), "%s (511-byte footer)", rule)
	}
	if f.DiskType != typeFixed {
		return nil, "", 0, 0, image.Corruptf(src.Path, format, src.Size-(footerSize-1)+60, "a 511-byte footer after a %s disk (only fixed disks had one)", f.diskTypeName())
	}
	return f, "", footerSize - 1, src.Size - (footerSize - 1), nil
}

// readFooter512 returns the footer found and the offset it was found at.
func readFooter512(src image.Source) (*footer, string, int64, error) {
	if src.Size < footerSize {
		return nil, "", 0, image.Corruptf(src.Path, format, 0, "file of %d bytes is shorter than the 512-byte footer every VHD carries: a truncated VHD", src.Size)
	}
	tail := make([]byte, footerSize)
	head := make([]byte, footerSize)
	tailOff := src.Size - footerSize
	if err := image.ReadFull(src.R, src.Size, tail, tailOff, src.Path, format, "footer"); err != nil {
		return nil, "", 0, err
	}
	if err := image.ReadFull(src.R, src.Size, head, 0, src.Path, format, "footer copy"); err != nil {
		return nil, "", 0, err
	}
	ft, ftAt, tailRule := parseFooter(tail)
	fh, fhAt, headRule := parseFooter(head)
	if tailRule == "" {
		if headRule == "" && string(head) != string(tail) {
			return ft, fmt.Sprintf("the footer copy at offset 0 differs from the footer at offset %d; using the latter", tailOff), tailOff, nil
		}
		return ft, "", tailOff, nil
	}
	if headRule == "" && fh.DiskType != typeFixed {
		return fh, fmt.Sprintf("footer at offset %d is damaged (%s); using the backup copy at offset 0", tailOff, tailRule), 0, nil
	}
	switch {
	case ft != nil:
		msg := tailRule
		if fh != nil {
			msg += "; the backup copy at offset 0 is damaged too: " + headRule
		}
		return nil, "", 0, image.Corruptf(src.Path, format, tailOff+int64(ftAt), "%s", msg)
	case fh != nil && headRule != "":
		return nil, "", 0, image.Corruptf(src.Path, format, int64(fhAt), "%s; no footer in the last 512 bytes", headRule)
	case fh != nil:
		return nil, "", 0, image.Corruptf(src.Path, format, 60, "the only footer (at offset 0) says fixed disk, whose footer must be at the end")
	}
	return nil, "", 0, image.Corruptf(src.Path, format, tailOff, "no \"conectix\" footer in the last 512 bytes nor at offset 0: a truncated or damaged VHD")
}
