package ova

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzOVF feeds OVF descriptors and manifests to their parsers.
func FuzzOVF(f *testing.F) {
	f.Add([]byte(`<Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:id="f" ovf:href="d.vmdk"/></References><DiskSection><Disk ovf:diskId="d" ovf:fileRef="f" ovf:capacity="40" ovf:capacityAllocationUnits="byte * 2^30"/><Disk ovf:diskId="e" ovf:capacity="1024"/></DiskSection></Envelope>`),
		[]byte("SHA256(x.ovf)= 00ff\nSHA1(d.vmdk) = abcd\n"))
	if b, err := os.ReadFile(filepath.Join("testdata", "small.ova")); err == nil && len(b) > 3072 {
		f.Add(b[512:2048], b[2560:2800])
	}
	f.Fuzz(func(t *testing.T, ovf, mf []byte) {
		disks, err := parseOVF(ovf, "fuzz.ovf")
		if err == nil {
			for _, d := range disks {
				if d.Capacity < -1 {
					t.Fatalf("capacity %d", d.Capacity)
				}
			}
		}
		parseManifest(mf, "fuzz.mf")
	})
}
