package image

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestFieldJSON: a typed fact is a typed value in JSON, with its text
// where the text says more; what MarshalJSON writes reads back.
func TestFieldJSON(t *testing.T) {
	for _, c := range []struct {
		f    Field
		want string
	}{
		{Fact("refcount bits", 16), `{"name":"refcount bits","value":16}`},
		{Fact("lazy refcounts", false), `{"name":"lazy refcounts","value":false}`},
		{Fact("internal snapshots", 2, "2 (the active state is read)"), `{"name":"internal snapshots","value":2,"text":"2 (the active state is read)"}`},
		{Geometry(1, 2, 3), `{"name":"geometry","value":{"cylinders":1,"heads":2,"sectors":3},"text":"1/2/3 (C/H/S)"}`},
		{Field{Name: "creator", Value: "a <b> & c"}, `{"name":"creator","value":"a <b> & c"}`},
	} {
		// As the CLI writes it: no HTML escaping.
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		err := e.Encode(c.f)
		b := bytes.TrimSpace(buf.Bytes())
		if err != nil || string(b) != c.want {
			t.Errorf("%s: %s, %v; want %s", c.f.Name, b, err, c.want)
			continue
		}
		var back Field
		if err := json.Unmarshal(b, &back); err != nil || back.Name != c.f.Name || back.Value != c.f.Value {
			t.Errorf("%s: read back %+v, %v", c.f.Name, back, err)
		}
	}
}

// FuzzFieldJSON: any JSON reads into a Field or is refused, and a Field
// read writes and reads back the same.
func FuzzFieldJSON(f *testing.F) {
	for _, s := range []string{`{"name":"a","value":16}`, `{"name":"g","value":{"c":1},"text":"1"}`, `{"name":"s","value":"x"}`, `{"value":null}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fl Field
		if json.Unmarshal(b, &fl) != nil {
			return
		}
		out, err := json.Marshal(fl)
		if err != nil {
			t.Fatalf("%+v does not write: %v", fl, err)
		}
		var again Field
		if err := json.Unmarshal(out, &again); err != nil || again.Name != fl.Name || again.Value != fl.Value {
			t.Fatalf("%s read back as %+v, %v (first %+v)", out, again, err, fl)
		}
		if fl.Data != nil && !reflect.DeepEqual(normal(t, again.Data), normal(t, fl.Data)) {
			t.Fatalf("%s: data %v, then %v", out, fl.Data, again.Data)
		}
	})
}

// normal is v as JSON reads it back, for comparing.
func normal(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}
