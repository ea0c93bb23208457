package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// ReadJSON reads what `convert batch --json` prints: an Outcome per disk,
// a line each, then {"summary": ...}. A script in Go (or a test) reads a
// batch's result with it; sum is zero (no disks) when the summary line is
// missing (a batch that was killed).
func ReadJSON(r io.Reader) (outs []Outcome, sum Summary, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"summary"`)) {
			var s struct{ Summary Summary }
			if err := json.Unmarshal(line, &s); err != nil {
				return outs, sum, fmt.Errorf("batch output line %d: %w", n, err)
			}
			sum = s.Summary
			continue
		}
		var o Outcome
		if err := json.Unmarshal(line, &o); err != nil {
			return outs, sum, fmt.Errorf("batch output line %d: %w", n, err)
		}
		outs = append(outs, o)
	}
	return outs, sum, sc.Err()
}

// ByOutput indexes outcomes by their output.
func ByOutput(outs []Outcome) map[string]Outcome {
	m := make(map[string]Outcome, len(outs))
	for _, o := range outs {
		m[o.Output] = o
	}
	return m
}
