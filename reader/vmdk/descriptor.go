package vmdk

import (
	"bytes"
	"strconv"
	"strings"

	"vmimport/reader/image"
)

// The descriptor (Virtual Disk Format 1.1, "The Descriptor File") is text:
// a header of key=value lines, one line per extent, and a disk database of
// ddb.* keys. It lives in its own small file or embedded in a sparse extent.

const maxExtents = 1 << 16

// descExtent is one extent line: access size type ["file" [offset]].
type descExtent struct {
	Access  string // RW, RDONLY, NOACCESS
	Sectors int64
	Type    string // FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, ...
	File    string
	Offset  int64 // sectors, flat extents only
	line    int
}

type descriptor struct {
	Keys    map[string]string // header keys and ddb.* keys, unquoted
	Order   []string          // keys in file order
	Extents []descExtent
}

func (d *descriptor) get(k string) string { return d.Keys[k] }

// parseDescriptor parses descriptor text. path and base (the offset of the
// text in its file) only serve error messages.
func parseDescriptor(text []byte, path string, base int64) (*descriptor, error) {
	// An embedded descriptor is padded with NULs to its sector count.
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	d := &descriptor{Keys: map[string]string{}}
	off := base
	for n, raw := range bytes.Split(text, []byte("\n")) {
		lineOff := off
		off += int64(len(raw)) + 1
		line := strings.TrimSpace(strings.TrimSuffix(string(raw), "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		fail := func(rule string, args ...any) error {
			args = append([]any{n + 1}, args...)
			return image.Corruptf(path, "vmdk descriptor", lineOff, "line %d: "+rule, args...)
		}
		switch {
		case strings.HasPrefix(line, "RW ") || strings.HasPrefix(line, "RDONLY ") || strings.HasPrefix(line, "NOACCESS "):
			if len(d.Extents) >= maxExtents {
				return nil, fail("more than %d extents", maxExtents)
			}
			e, err := parseExtentLine(line)
			if err != nil {
				return nil, fail("extent %q: %s", line, err)
			}
			e.line = n + 1
			d.Extents = append(d.Extents, e)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fail("%q is neither a key=value pair nor an extent", line)
			}
			k = strings.TrimSpace(k)
			v = strings.TrimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if k == "" {
				return nil, fail("empty key")
			}
			if _, dup := d.Keys[k]; !dup {
				d.Order = append(d.Order, k)
			}
			d.Keys[k] = v
		}
	}
	return d, nil
}

type lineError string

func (e lineError) Error() string { return string(e) }

func parseExtentLine(line string) (descExtent, error) {
	var e descExtent
	fields, err := splitQuoted(line)
	if err != nil {
		return e, err
	}
	if len(fields) < 3 {
		return e, lineError("needs access, size and type")
	}
	e.Access = fields[0]
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n <= 0 || n > image.MaxVirtualSize/sector {
		return e, lineError("size " + strconv.Quote(fields[1]) + " is not a sector count from 1 to the 64 TiB limit")
	}
	e.Sectors = n
	e.Type = strings.ToUpper(fields[2])
	if e.Type == "ZERO" {
		if len(fields) > 3 {
			return e, lineError("a ZERO extent names no file")
		}
		return e, nil
	}
	if len(fields) < 4 {
		return e, lineError("names no file")
	}
	e.File = fields[3]
	if e.File == "" {
		return e, lineError("names an empty file")
	}
	if len(fields) > 4 {
		o, err := strconv.ParseInt(fields[4], 10, 64)
		if err != nil || o < 0 || o > image.MaxVirtualSize/sector {
			return e, lineError("offset " + strconv.Quote(fields[4]) + " is not a sector count")
		}
		e.Offset = o
	}
	if len(fields) > 5 {
		return e, lineError("has more than 5 fields")
	}
	return e, nil
}

// splitQuoted splits on blanks, keeping "quoted strings" (which may hold
// blanks) whole and unquoted.
func splitQuoted(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, lineError("unterminated quote")
			}
			out = append(out, s[1:1+end])
			s = s[2+end:]
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		out = append(out, s[:end])
		s = s[end:]
	}
}
