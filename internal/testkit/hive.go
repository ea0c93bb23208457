package testkit

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

// EmptyHive is an empty registry hive (regf 1.5): the base block, one 4 KiB
// hive bin holding the root key (nk), a security descriptor cell (sk) and
// a free cell. hivexregedit --merge writes keys onto it. The layout
// follows the regf format (base block fields at 0x00-0x30, checksum at
// 0x1fc; hbin header; cells with negative sizes when allocated).
func EmptyHive() []byte {
	le := binary.LittleEndian
	b := make([]byte, 8192)
	copy(b, "regf")
	le.PutUint32(b[4:], 1)     // sequence 1
	le.PutUint32(b[8:], 1)     // sequence 2
	le.PutUint32(b[0x14:], 1)  // major
	le.PutUint32(b[0x18:], 5)  // minor
	le.PutUint32(b[0x20:], 1)  // format: direct memory load
	le.PutUint32(b[0x24:], 32) // root cell
	le.PutUint32(b[0x28:], 4096)
	le.PutUint32(b[0x2c:], 1)
	var sum uint32
	for i := 0; i < 0x1fc; i += 4 {
		sum ^= le.Uint32(b[i:])
	}
	le.PutUint32(b[0x1fc:], sum)

	bin := b[4096:]
	copy(bin, "hbin")
	le.PutUint32(bin[8:], 4096)
	// The root key at 0x20: 0x58 bytes (size field included).
	nk := bin[0x20:]
	le.PutUint32(nk, 0xffffffa8)
	copy(nk[4:], "nk")
	le.PutUint16(nk[6:], 0x2c)            // KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
	le.PutUint32(nk[4+0x10:], 0xffffffff) // parent
	le.PutUint32(nk[4+0x1c:], 0xffffffff) // subkey list
	le.PutUint32(nk[4+0x20:], 0xffffffff) // volatile subkey list
	le.PutUint32(nk[4+0x28:], 0xffffffff) // value list
	le.PutUint32(nk[4+0x2c:], 0x78)       // security cell
	le.PutUint32(nk[4+0x30:], 0xffffffff) // class name
	le.PutUint16(nk[4+0x48:], uint16(len("ROOT")))
	copy(nk[4+0x4c:], "ROOT")
	// The security cell at 0x78: a self-relative descriptor with no
	// owner, group or ACLs (20 bytes).
	sk := bin[0x78:]
	le.PutUint32(sk, 0xffffffd8)
	copy(sk[4:], "sk")
	le.PutUint32(sk[4+4:], 0x78) // flink
	le.PutUint32(sk[4+8:], 0x78) // blink
	le.PutUint32(sk[4+12:], 1)   // references
	le.PutUint32(sk[4+16:], 20)  // descriptor size
	sk[4+20] = 1                 // revision
	le.PutUint16(sk[4+22:], 0x8000)
	// The rest of the bin is one free cell.
	le.PutUint32(bin[0xa0:], 4096-0xa0)
	return b
}

// MakeHive writes a hive at path from .reg text (REGEDIT4 / Windows
// Registry Editor 5.00 syntax, keys under the hive's root written as
// "[\Key\Sub]") merged onto EmptyHive with hivexregedit.
func MakeHive(t testing.TB, path, reg string) {
	t.Helper()
	Need(t, "hivexregedit")
	if err := os.WriteFile(path, EmptyHive(), 0o644); err != nil {
		t.Fatal(err)
	}
	regFile := path + ".reg"
	reg = "Windows Registry Editor Version 5.00\n\n" + withParents(reg)
	if err := os.WriteFile(regFile, []byte(reg), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(regFile)
	cmd := exec.Command("hivexregedit", "--merge", path, regFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hivexregedit --merge %s: %v\n%s\n%s", filepath.Base(path), err, out, reg)
	}
}

// withParents adds an empty section for every parent key that the .reg
// text does not make before its children: hivexregedit creates a key only
// under an existing parent.
func withParents(reg string) string {
	seen := map[string]bool{"": true}
	var b strings.Builder
	for _, line := range strings.Split(reg, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "[\\"); ok && strings.HasSuffix(k, "]") {
			parts := strings.Split(strings.TrimSuffix(k, "]"), "\\")
			for i := 1; i < len(parts); i++ {
				p := strings.ToLower(strings.Join(parts[:i], "\\"))
				if !seen[p] {
					seen[p] = true
					b.WriteString("[\\" + strings.Join(parts[:i], "\\") + "]\n\n")
				}
			}
			seen[strings.ToLower(strings.Join(parts, "\\"))] = true
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// UTF16Z is s as NUL-terminated UTF-16LE, as .reg hex(2)/hex(7) data
// holds it.
func UTF16Z(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}
