package check

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"vmimport/internal/testkit"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the Windows fuzz seeds in testdata/ (ntfs.img.gz, system.hive.gz, software.hive.gz)")

// TestWriteWindowsSeeds writes the seeds of FuzzNTFS and FuzzHive with
// -write-seeds (see testdata/README.md): a 4 MiB NTFS volume holding a
// clean 2012 R2 system tree, with $LogFile and $UpCase zeroed (the
// reader never reads them; zeros keep the fuzz input small), and the
// clean SYSTEM and SOFTWARE hives.
func TestWriteWindowsSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("use -write-seeds")
	}
	dir := t.TempDir()
	sys, soft := filepath.Join(dir, "SYSTEM"), filepath.Join(dir, "SOFTWARE")
	testkit.MakeHive(t, sys, testkit.CleanSystemReg("2012r2")+"[\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{11111111-2222-3333-4444-555555555555}]\n\"IPAddress\"="+testkit.HexReg(7, "10.1.2.3")+"\n\n")
	testkit.MakeHive(t, soft, testkit.CleanSoftwareReg("2012r2")+"[\\Policies\\Microsoft\\WindowsFirewall\\DomainProfile]\n\"EnableFirewall\"=dword:00000000\n\n")
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	files := map[string][]byte{
		"/Windows/System32/config/SYSTEM":   read(sys),
		"/Windows/System32/config/SOFTWARE": read(soft),
		"/Windows/System32/cmd.exe":         testkit.PE(0x8664),
		"/hiberfil.sys":                     []byte("wake"),
	}
	for i := range 12 {
		files[fmt.Sprintf("/Windows/System32/DriverStore/FileRepository/pkg%02d.inf_amd64_%04x", i, i*131)] = []byte{byte(i)}
	}
	img := filepath.Join(dir, "ntfs.img")
	testkit.MakeNTFS(t, img, 4, "", files)
	b := read(img)
	zeroFile(t, b, 2)  // $LogFile
	zeroFile(t, b, 10) // $UpCase
	zeroFile(t, b, 4)  // $AttrDef
	write := func(name string, data []byte) {
		var z bytes.Buffer
		w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		w.Write(data)
		w.Close()
		if err := os.WriteFile(filepath.Join("testdata", name), z.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ntfs.img.gz", b)
	write("system.hive.gz", read(sys))
	write("software.hive.gz", read(soft))
}

// zeroFile zeroes the data of a system file of an NTFS image (by its
// record's first data run; fresh mkntfs volumes are not fragmented).
func zeroFile(t *testing.T, b []byte, rec int) {
	le := binary.LittleEndian
	cluster := int64(le.Uint16(b[0x0b:])) * int64(b[0x0d])
	recSize := int64(1) << uint(-int8(b[0x40]))
	r := b[int64(le.Uint64(b[0x30:]))*cluster+int64(rec)*recSize:][:recSize]
	for a := int(le.Uint16(r[0x14:])); le.Uint32(r[a:]) != 0xffffffff; a += int(le.Uint32(r[a+4:])) {
		if le.Uint32(r[a:]) != 0x80 || r[a+8] == 0 {
			continue
		}
		runs := r[a+int(le.Uint16(r[a+0x20:])):]
		h := runs[0]
		ls, os := int(h&0xf), int(h>>4)
		var n, lcn int64
		for k := ls - 1; k >= 0; k-- {
			n = n<<8 | int64(runs[1+k])
		}
		for k := os - 1; k >= 0; k-- {
			lcn = lcn<<8 | int64(runs[1+ls+k])
		}
		clear(b[lcn*cluster : (lcn+n)*cluster])
		return
	}
	t.Fatalf("record %d has no non-resident $DATA", rec)
}
