package image

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Geometry is a disk's C/H/S geometry as a fact.
func Geometry(c, h, s int64) Field {
	return Fact("geometry", map[string]int64{"cylinders": c, "heads": h, "sectors": s}, fmt.Sprintf("%d/%d/%d (C/H/S)", c, h, s))
}

// fieldJSON is a Field as JSON: a typed value, and its text for people
// when the text says more than the value.
type fieldJSON struct {
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
	Text  string          `json:"text,omitempty"`
}

// MarshalJSON gives the typed value of a fact (Data), or its text.
func (f Field) MarshalJSON() ([]byte, error) {
	var v any = f.Value
	text := ""
	if f.Data != nil {
		v = f.Data
		if f.Value != fmt.Sprint(f.Data) {
			text = f.Value
		}
	}
	// Without HTML escaping (a creator "a & b" stays so): the caller's
	// encoder escapes if it wants to.
	value, err := marshal(v)
	if err != nil {
		return nil, err
	}
	return marshal(fieldJSON{Name: f.Name, Value: value, Text: text})
}

// marshal is json.Marshal without HTML escaping.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(b.Bytes()), nil
}

// UnmarshalJSON reads what MarshalJSON wrote (and the plain strings of
// earlier versions).
func (f *Field) UnmarshalJSON(b []byte) error {
	var j fieldJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Field{Name: j.Name}
	if len(j.Value) == 0 || string(j.Value) == "null" {
		return nil
	}
	var s string
	if json.Unmarshal(j.Value, &s) == nil {
		f.Value = s
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(j.Value))
	d.UseNumber()
	if err := d.Decode(&f.Data); err != nil {
		return err
	}
	f.Value = j.Text
	if f.Value == "" {
		f.Value = fmt.Sprint(f.Data) // as Fact makes it
	}
	return nil
}
