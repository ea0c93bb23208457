package batch

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseManifest(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		want []Record
		err  string // substring of the error; "" for none
	}{
		{"jsonl", "{\"source\": \"a.vmdk\", \"output\": \"a.raw\"}\n\n{\"source\": \"b\", \"workers\": 4, \"force\": true, \"allow-path\": [\"x\", \"y\"], \"disk\": null}\n",
			[]Record{
				{Line: 1, Fields: []Field{{"source", []string{"a.vmdk"}, 0}, {"output", []string{"a.raw"}, 0}}},
				{Line: 3, Fields: []Field{{"source", []string{"b"}, 0}, {"workers", []string{"4"}, 0}, {"force", []string{"true"}, 0}, {"allow-path", []string{"x", "y"}, 0}}},
			}, ""},
		{"leading blank lines keep the numbers", "\n\n  \n{\"source\": \"a\"}\n", []Record{{Line: 4, Fields: []Field{{"source", []string{"a"}, 0}}}}, ""},
		{"csv", "source,output,workers\na.vmdk,a.raw,\n\n\"b c\",b.raw,2\n",
			[]Record{
				{Line: 2, Fields: []Field{{"source", []string{"a.vmdk"}, 1}, {"output", []string{"a.raw"}, 1}}},
				{Line: 4, Fields: []Field{{"source", []string{"b c"}, 1}, {"output", []string{"b.raw"}, 1}, {"workers", []string{"2"}, 1}}},
			}, ""},
		{"empty", "  \n\n", nil, "empty"},
		{"not an object", "{\"source\": \"a\"}\n[1]\n", nil, "m:2: "},
		{"broken object", "{\"source\": \"a\"}\n{\"source\": \n", nil, "m:2: "},
		{"two objects on a line", "{\"source\": \"a\"} {\"source\": \"b\"}\n", nil, "m:1: text after the object"},
		{"key twice", "{\"source\": \"a\", \"source\": \"b\"}\n", nil, "m:1: key \"source\" given twice"},
		{"nested object", "{\"source\": {\"x\": 1}}\n", nil, "m:1: key \"source\""},
		{"csv ragged row", "source,output\na,b,c\n", nil, "m:2: "},
		{"csv nameless column", "source,,output\n", nil, "m:1: column 2 has no name"},
		{"csv column twice", "source,source\n", nil, "m:1: column \"source\" given twice"},
		{"csv bad quote", "source,output\n\"a,b\n", nil, "m:2: "},
	} {
		got, err := ParseManifest(strings.NewReader(c.text), "m")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrManifest) {
				t.Errorf("%s: error %v, want one with %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v\n got %+v\nwant %+v", c.name, err, got, c.want)
		}
	}
}

func TestParseManifestFiles(t *testing.T) {
	for name, n := range map[string]int{"disks.jsonl": 3, "disks.csv": 2} {
		f, err := os.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ParseManifest(f, name)
		f.Close()
		if err != nil || len(recs) != n {
			t.Fatalf("%s: %d records, %v", name, len(recs), err)
		}
		if v, _ := recs[0].Get("source"); v != "exports/web01.vmdk" {
			t.Errorf("%s: first source %q (a byte order mark kept?)", name, v)
		}
	}
}

// FuzzParseManifest: any text is parsed or refused with ErrManifest, never
// a panic, and every record has a line and keys.
func FuzzParseManifest(f *testing.F) {
	for _, name := range []string{"disks.jsonl", "disks.csv"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("{\"a\": [1, 2.5e3, true, \"x\"]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := ParseManifest(strings.NewReader(string(b)), "fuzz")
		if err != nil && !errors.Is(err, ErrManifest) {
			t.Fatalf("an error that is no ErrManifest: %v", err)
		}
		// The records of the good lines come with the error of the bad.
		for _, r := range recs {
			if r.Line < 1 {
				t.Fatalf("record without a line: %+v", r)
			}
			for _, f := range r.Fields {
				if len(f.Values) == 0 {
					t.Fatalf("field without a value: %+v", r)
				}
			}
		}
	})
}

// TestCSVQuotedCellsKept: blanks around an unquoted cell are trimmed; a
// quoted cell is taken as it is (a file may be named " lead.qcow2").
func TestCSVQuotedCellsKept(t *testing.T) {
	text := "source , output\n\" lead.qcow2\",  out.raw \n  trail.vmdk  ,\"out 2.raw \"\n\"multi\nline\", x\n"
	recs, err := ParseManifest(strings.NewReader(text), "m.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{" lead.qcow2", "out.raw"}, {"trail.vmdk", "out 2.raw "}, {"multi\nline", "x"}}
	if len(recs) != len(want) {
		t.Fatalf("%d records", len(recs))
	}
	for i, w := range want {
		src, _ := recs[i].Get("source")
		out, _ := recs[i].Get("output")
		if src != w[0] || out != w[1] {
			t.Errorf("record %d: %q, %q; want %q, %q", i+1, src, out, w[0], w[1])
		}
	}
}
