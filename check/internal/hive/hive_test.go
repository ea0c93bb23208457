package hive

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
)

func hexList(b []byte) string {
	s := make([]string, len(b))
	for i, c := range b {
		s[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(s, ",")
}

// makeTestHive builds a hive with hivexregedit: values of every type, a
// value of more than 16344 bytes (big data), and a key with enough subkeys
// that hivex splits its list.
func makeTestHive(t testing.TB) []byte {
	var reg strings.Builder
	reg.WriteString("[\\Select]\n\"Current\"=dword:00000002\n\n")
	reg.WriteString("[\\ControlSet002\\Services\\viostor]\n\"Start\"=dword:00000000\n\"ImagePath\"=hex(2):" + hexList(testkit.UTF16Z(`system32\drivers\viostor.sys`)) + "\n")
	reg.WriteString("\"Group\"=\"SCSI miniport\"\n\"Quad\"=hex(b):01,00,00,00,02,00,00,00\n")
	reg.WriteString("\"IPAddress\"=hex(7):" + hexList(append(append(testkit.UTF16Z("10.0.0.5"), testkit.UTF16Z("10.0.0.6")...), 0, 0)) + "\n")
	reg.WriteString("\"Big\"=hex:" + hexList(bytes.Repeat([]byte{0x41}, 20000)) + "\n\n")
	for i := range 300 {
		fmt.Fprintf(&reg, "[\\Many\\Key%03d]\n\"N\"=dword:%08x\n\n", i, i)
	}
	p := filepath.Join(t.TempDir(), "SYSTEM")
	testkit.MakeHive(t, p, reg.String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRead(t *testing.T) {
	b := makeTestHive(t)
	h, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Dirty {
		t.Error("clean hive reads as dirty")
	}
	k, err := h.Key(`select`)
	if err != nil {
		t.Fatal(err)
	}
	v, err := k.Value("CURRENT")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Uint(); err != nil || n != 2 {
		t.Errorf("Current = %d, %v", n, err)
	}
	svc, err := h.Key(`ControlSet002\services\VIOSTOR`)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) *Value {
		v, err := svc.Value(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if s, err := get("ImagePath").String(); err != nil || s != `system32\drivers\viostor.sys` {
		t.Errorf("ImagePath %q %v", s, err)
	}
	if s, err := get("Group").String(); err != nil || s != "SCSI miniport" {
		t.Errorf("Group %q %v", s, err)
	}
	if n, err := get("Quad").Uint(); err != nil || n != 2<<32|1 {
		t.Errorf("Quad %x %v", n, err)
	}
	if ss, err := get("IPAddress").Strings(); err != nil || strings.Join(ss, " ") != "10.0.0.5 10.0.0.6" {
		t.Errorf("IPAddress %q %v", ss, err)
	}
	if d, err := get("Big").Data(); err != nil || !bytes.Equal(d, bytes.Repeat([]byte{0x41}, 20000)) {
		t.Errorf("Big: %d bytes, %v", len(d), err)
	}
	many, err := h.Key("Many")
	if err != nil {
		t.Fatal(err)
	}
	subs, err := many.Subkeys()
	if err != nil || len(subs) != 300 {
		t.Fatalf("%d subkeys, %v", len(subs), err)
	}
	k, err = many.Subkey("key299")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := k.Value("n"); err != nil {
		t.Fatal(err)
	} else if n, _ := v.Uint(); n != 299 {
		t.Errorf("Key299 N = %d", n)
	}
	if _, err := h.Key(`ControlSet002\Services\nope`); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing key: %v", err)
	}
	if _, err := svc.Value("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing value: %v", err)
	}
}

func TestCorrupt(t *testing.T) {
	b := makeTestHive(t)
	// A subkey list that points at itself, and a dirty base block.
	c := bytes.Clone(b)
	c[8]++
	h, err := Open(bytes.NewReader(c), int64(len(c)))
	if err != nil || !h.Dirty {
		t.Fatalf("dirty: %v %v", h, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 8192), []byte("regf")} {
		if _, err := Open(bytes.NewReader(bad), int64(len(bad))); err == nil {
			t.Errorf("%d bytes opened", len(bad))
		}
	}
}
