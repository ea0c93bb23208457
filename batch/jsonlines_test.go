package batch

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestReadJSON: what --json prints reads back, and a line that is not an
// outcome is refused with its number.
func TestReadJSON(t *testing.T) {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.Encode(Outcome{Line: 1, Source: "a.vmdk", Output: "s3://bkt/a.qcow2", Status: Done, Bytes: 42})
	e.Encode(Outcome{Line: 2, Source: "b.vmdk", Output: "b.raw", Status: Failed, Error: "b.vmdk: no such file"})
	e.Encode(map[string]Summary{"summary": {Disks: 2, Done: 1, Failed: 1}})
	outs, sum, err := ReadJSON(strings.NewReader(b.String()))
	if err != nil || len(outs) != 2 || sum.Disks != 2 || sum.Failed != 1 {
		t.Fatalf("%+v %+v %v", outs, sum, err)
	}
	if outs[0].Output != "s3://bkt/a.qcow2" || outs[0].Bytes != 42 || outs[1].Status != Failed || outs[1].Error == "" {
		t.Errorf("%+v", outs)
	}
	_, _, err = ReadJSON(strings.NewReader(b.String() + "not json\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("bad line: %v", err)
	}
	if m := ByOutput(outs); len(m) != 2 || m["b.raw"].Line != 2 {
		t.Errorf("by output: %+v", m)
	}
	if outs, sum, err := ReadJSON(strings.NewReader("")); err != nil || outs != nil || sum.Disks != 0 {
		t.Errorf("empty: %v %v %v", outs, sum, err)
	}
}
