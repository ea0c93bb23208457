package job

import (
	"fmt"
	"strings"

	"vmimport/reader/image"
)

// SourceFormats are the formats a source may be asserted to have
// (Spec.SourceFormat), as image.Info names them.
var SourceFormats = []string{"raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "ova"}

// sourceFormat is the format name for an assertion, qemu-img's names
// accepted ("vpc" is VHD); "" for none convert reads.
func sourceFormat(name string) string {
	n := strings.ToLower(name)
	if n == "vpc" {
		n = "vhd"
	}
	for _, f := range SourceFormats {
		if f == n {
			return f
		}
	}
	return ""
}

// CheckSourceFormat refuses a source whose bytes say another format than
// the one asserted (-f); want "" asserts nothing.
func CheckSourceFormat(want string, info image.Info) error {
	if want == "" {
		return nil
	}
	f := sourceFormat(want)
	if f == "" {
		return fmt.Errorf("-f %s: not a format convert reads; use %s", want, strings.Join(SourceFormats, ", "))
	}
	if info.Format == f {
		return nil
	}
	got := info.Format
	if info.Subformat != "" {
		got += " (" + info.Subformat + ")"
	}
	return fmt.Errorf("%s: -f %s, but the file is %s: convert tells the format from the bytes; drop -f, or give the %s file", info.Path, want, got, f)
}
