package clitest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// jsonRecords parses stderr as JSON records, one a line; a line that is
// none fails the test.
func jsonRecords(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("a line of stderr that is no JSON record: %q\n%s", line, stderr)
		}
		out = append(out, r)
	}
	return out
}

// TestLogFormatJSON: under --log-format json a batch's and a worker's
// stderr hold JSON records and nothing else, down to the error they end
// with (its exit code kept); a wrong --log-format is a usage error.
func TestLogFormatJSON(t *testing.T) {
	dir := t.TempDir()
	src := sampleDisk(t, dir)
	manifest := filepath.Join(dir, "disks.jsonl")
	os.WriteFile(manifest, []byte(`{"source": "`+src+`", "output": "out.raw"}`+"\n"+`{"source": "`+filepath.Join(dir, "missing.qcow2")+`", "output": "out2.raw"}`+"\n"), 0o644)
	r := convert(t, dir, "batch", manifest, "--no-state", "--log-format", "json", "--progress", "always", "--metrics-addr", "127.0.0.1:0")
	recs := jsonRecords(t, r.stderr)
	msgs := map[string]int{}
	for _, rec := range recs {
		msgs[rec["msg"].(string)]++
	}
	last := recs[len(recs)-1]
	if r.code != 1 || recs[0]["msg"] != "metrics" || msgs["done"] != 1 || msgs["failed"] != 1 || msgs["summary"] != 1 || last["msg"] != "exit" || last["code"] != 1.0 ||
		!strings.Contains(last["error"].(string), "1 of 2 disks failed") {
		t.Errorf("exit %d, records %v, last %v\n%s", r.code, msgs, last, r.stderr)
	}

	r = convert(t, dir, "worker", "--queue", "nats://127.0.0.1:1", "--log-format", "json", "--metrics-addr", "127.0.0.1:0")
	recs = jsonRecords(t, r.stderr)
	if last := recs[len(recs)-1]; r.code != 1 || recs[0]["msg"] != "metrics" || last["msg"] != "exit" || !strings.Contains(last["error"].(string), "unreachable") {
		t.Errorf("worker: exit %d\n%s", r.code, r.stderr)
	}

	r = convert(t, dir, "worker", "--queue", "nats://127.0.0.1:1", "--log-format", "xml")
	if r.code != 2 || lastLine(r.stderr) != `convert: --log-format "xml": use text or json` {
		t.Errorf("exit %d: %q", r.code, r.stderr)
	}
}
