package batch

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Record is one disk of a manifest: settings by key, in the order given.
// Keys are the long flag names of a single conversion, plus "source".
type Record struct {
	// Line is where the record starts in the manifest, from 1.
	Line   int
	Fields []Field
}

// Field is one setting of a record. Values holds one value, or several
// for a repeatable flag given as a JSON array. KeyLine is where the key is
// written when that is not the record's line (a CSV column's header row;
// 0 otherwise).
type Field struct {
	Key     string
	Values  []string
	KeyLine int
}

// Get returns the first value of key, if set.
func (r *Record) Get(key string) (string, bool) {
	for _, f := range r.Fields {
		if f.Key == key && len(f.Values) > 0 {
			return f.Values[0], true
		}
	}
	return "", false
}

// Limits on a manifest, so a mistaken file (a disk image given as the
// manifest) fails fast instead of filling memory.
const (
	MaxRecords    = 100000
	maxLineLength = 1 << 20
)

// ErrManifest is wrapped by every error about a manifest's text.
var ErrManifest = errors.New("bad manifest")

// maxErrors bounds the lines ParseManifest reports in one pass.
const maxErrors = 100

// LineError is what is wrong with one line of a manifest: "disks.csv:3:
// ...". It is an ErrManifest.
type LineError struct {
	Name string
	Line int // 0: the manifest as a whole
	Err  error
}

func (e *LineError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.Name, e.Line, e.Err)
}

func (e *LineError) Unwrap() error        { return e.Err }
func (e *LineError) Is(target error) bool { return target == ErrManifest }

// lineErrors collects the bad lines of a manifest, up to maxErrors.
type lineErrors struct {
	name string
	errs []error
}

// add records a bad line; false once there are too many to go on.
func (l *lineErrors) add(line int, err error) bool {
	l.errs = append(l.errs, &LineError{Name: l.name, Line: line, Err: err})
	return len(l.errs) < maxErrors
}

// err is every bad line together (errors.Join: each on a line of its
// own), nil when there is none.
func (l *lineErrors) err() error { return errors.Join(l.errs...) }

// ParseManifest reads a manifest: JSON Lines (one object a line) or CSV
// with a header row, told apart by the first byte that is not blank. name
// is used in errors ("disks.csv:7: ..."); line numbers count every line of
// the text, a CSV's header and blank lines included. Blank lines are
// skipped; so are JSON lines starting with #. Every bad line is reported,
// not the first only (up to 100): the error joins a *LineError for each,
// and the records returned with it are those of the good lines (so that
// their settings can be checked in the same pass).
func ParseManifest(r io.Reader, name string) ([]Record, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	// A UTF-8 byte order mark (Excel writes one) is not part of the text.
	if bom, _ := br.Peek(3); string(bom) == "\xef\xbb\xbf" {
		br.Discard(3)
	}
	// The first byte that is not blank tells the format; blank lines stay
	// in the stream so that line numbers stay right.
	head, err := br.Peek(br.Size())
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	i := bytes.IndexFunc(head, func(r rune) bool { return !strings.ContainsRune(" \t\r\n", r) })
	if i < 0 {
		if len(head) < br.Size() {
			return nil, &LineError{Name: name, Err: errors.New("empty: give one disk a line (JSON Lines, or CSV with a header row)")}
		}
		return nil, &LineError{Name: name, Err: errors.New("starts with 64 KiB of blanks")}
	}
	if c := head[i]; c == '{' || c == '#' {
		return parseJSONLines(br, name)
	}
	return parseCSV(br, name)
}

func parseJSONLines(r *bufio.Reader, name string) ([]Record, error) {
	var recs []Record
	bad := lineErrors{name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLineLength)
	line := 1
	for ; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		rec, err := parseJSONRecord(text)
		if err != nil {
			if !bad.add(line, err) {
				return recs, bad.err()
			}
			continue
		}
		rec.Line = line
		if len(recs) == MaxRecords {
			bad.add(line, fmt.Errorf("more than %d disks", MaxRecords))
			return recs, bad.err()
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		bad.add(line, fmt.Errorf("%v (a line is limited to %d bytes)", err, maxLineLength))
	}
	return recs, bad.err()
}

// parseJSONRecord reads one object whose values are strings, numbers,
// booleans, arrays of those, or null (not set), keeping the key order.
func parseJSONRecord(text []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return Record{}, errors.New("not a JSON object")
	}
	var rec Record
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Record{}, err
		}
		key := tok.(string)
		if seen[key] {
			return Record{}, fmt.Errorf("key %q given twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Record{}, fmt.Errorf("key %q: %v", key, err)
		}
		vals, err := jsonValues(raw)
		if err != nil {
			return Record{}, fmt.Errorf("key %q: %v", key, err)
		}
		if len(vals) > 0 { // null and [] leave the setting at its default
			rec.Fields = append(rec.Fields, Field{Key: key, Values: vals})
		}
	}
	if _, err := dec.Token(); err != nil {
		return Record{}, err
	}
	if dec.More() {
		return Record{}, errors.New("text after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Record{}, errors.New("text after the object")
	}
	return rec, nil
}

func jsonValues(raw json.RawMessage) ([]string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil
	}
	if arr, ok := v.([]any); ok {
		out := make([]string, 0, len(arr))
		for _, e := range arr {
			s, err := scalar(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalar(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case json.Number:
		if f, err := x.Float64(); err == nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return "", fmt.Errorf("number %s out of range", x)
		}
		return x.String(), nil
	case nil:
		return "", errors.New("null inside a list")
	}
	return "", fmt.Errorf("a %T is not a setting: use a string, number, boolean or a list of them", v)
}

func parseCSV(r io.Reader, name string) ([]Record, error) {
	// The text is kept to tell quoted cells from unquoted ones (csv.Reader
	// does not say): a quoted cell is taken as it is, blanks and all.
	text, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	lines := []int{0} // where each line starts, by line number - 1
	for i, c := range text {
		if c == '\n' {
			lines = append(lines, i+1)
		}
	}
	quoted := func(line, col int) bool {
		if line < 1 || line > len(lines) {
			return false
		}
		i := lines[line-1] + col - 1
		return i >= 0 && i < len(text) && text[i] == '"'
	}
	cr := csv.NewReader(bytes.NewReader(text))
	cr.FieldsPerRecord = 0 // every row as wide as the header
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = false
	bad := lineErrors{name: name}
	header, err := cr.Read()
	headerLine := 1
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			headerLine = pe.StartLine
		}
		bad.add(headerLine, csvError(err))
		return nil, bad.err()
	}
	headerLine, _ = cr.FieldPos(0)
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		switch {
		case h == "":
			bad.add(headerLine, fmt.Errorf("column %d has no name", i+1))
		case seen[h]:
			bad.add(headerLine, fmt.Errorf("column %q given twice", h))
		}
		seen[h] = true
	}
	if len(bad.errs) > 0 {
		return nil, bad.err()
	}
	var recs []Record
	for {
		row, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.StartLine
			}
			if !bad.add(line, csvError(err)) || !errors.Is(err, csv.ErrFieldCount) {
				// A broken quote may have taken the rest of the text.
				break
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		rec := Record{Line: line}
		empty := true
		for i, v := range row {
			if l, c := cr.FieldPos(i); !quoted(l, c) {
				v = strings.TrimSpace(v)
			}
			if v == "" {
				continue // an empty cell leaves the setting at its default
			}
			empty = false
			rec.Fields = append(rec.Fields, Field{Key: header[i], Values: []string{v}, KeyLine: headerLine})
		}
		if empty {
			continue
		}
		if len(recs) == MaxRecords {
			bad.add(line, fmt.Errorf("more than %d disks", MaxRecords))
			return recs, bad.err()
		}
		recs = append(recs, rec)
	}
	return recs, bad.err()
}

// csvError drops the line and column encoding/csv puts in its messages:
// the caller names the line.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
