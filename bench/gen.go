// Package bench measures convert against its peers (qemu-img, and qemu-img
// followed by aws s3 cp) on realistic disks it generates from a fixed seed:
// an MBR disk whose first partition holds an ext4 file system full of files
// and whose second holds regions of random data between long zero gaps.
package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// GenOptions shape a generated disk.
type GenOptions struct {
	Size int64   // virtual size in bytes, at least 64 MiB
	Fill float64 // fraction of the virtual size holding data, 0.01..0.95
	Seed uint64
}

const mib = 1 << 20

// fixedTime is every timestamp in the generated file system.
var fixedTime = time.Unix(1700000000, 0)

// Generate writes a RAW disk to path. The same options give the same bytes
// (mkfs.ext4 runs with a fixed UUID, hash seed and clock).
func Generate(path string, o GenOptions) error {
	if o.Size < 64*mib || o.Fill < 0.01 || o.Fill > 0.95 {
		return fmt.Errorf("bench: disk of %d bytes at fill %.2f: want at least 64 MiB and fill 0.01..0.95", o.Size, o.Fill)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return fmt.Errorf("bench: mkfs.ext4 is needed to build the test disk: %w", err)
	}
	size := o.Size / mib * mib
	half := size / 2 / mib * mib
	p1Start, p1Size := int64(mib), half-mib // ext4
	p2Start, p2Size := half, size-half-mib  // random regions and gaps
	work, err := os.MkdirTemp(filepath.Dir(path), ".gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// The file tree: half the partition's share of data as files of three
	// kinds (log-like text, random, half-zero binaries).
	rng := rand.New(rand.NewPCG(o.Seed, 0x62656e6368))
	fill := rand.NewChaCha8(seed32(o.Seed))
	tree := filepath.Join(work, "root")
	budget := int64(float64(p1Size) * o.Fill * 0.9)
	if err := writeTree(tree, budget, rng, fill); err != nil {
		return err
	}
	fs := filepath.Join(work, "p1.ext4")
	if err := makeExt4(fs, tree, p1Size); err != nil {
		return err
	}

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr(p1Start, p1Size, p2Start, p2Size), 0); err != nil {
		return err
	}
	if err := copySparse(f, p1Start, fs); err != nil {
		return err
	}
	// Partition 2: regions (up to 32 MiB) of random bytes, spaced so that they take
	// the fill fraction of the partition.
	region := min(int64(32*mib), max(int64(mib), int64(float64(p2Size)*o.Fill/8)/mib*mib))
	stride := max(region, int64(float64(region)/o.Fill)/mib*mib)
	buf := make([]byte, mib)
	for off := p2Start; off+region <= p2Start+p2Size; off += stride {
		for i := int64(0); i < region; i += mib {
			fill.Read(buf)
			if _, err := f.WriteAt(buf, off+i); err != nil {
				return err
			}
		}
	}
	return f.Close()
}

func seed32(seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "convert-bench")
	return s
}

// WriteAt adapter so Generate reads naturally.
type writerAt interface {
	WriteAt(p []byte, off int64) (int, error)
}

func writeTree(root string, budget int64, rng *rand.Rand, fill *rand.ChaCha8) error {
	dirs := []string{"etc", "usr/bin", "usr/lib", "var/log", "home/user/docs"}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string][]byte{
		"etc/os-release": []byte("NAME=\"Bench Linux\"\nID=bench\nVERSION_ID=\"1\"\n"),
		"etc/fstab":      []byte("UUID=6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0 / ext4 defaults 0 1\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			return err
		}
	}
	var text bytes.Buffer
	for i := 0; budget > 0; i++ {
		n := min(budget, int64(4<<10+rng.IntN(16*mib)))
		b := make([]byte, n)
		var name string
		switch i % 4 {
		case 0, 1: // log-like text: compresses about 4:1
			text.Reset()
			for text.Len() < int(n) {
				fmt.Fprintf(&text, "%s host%02d service[%d]: request %d took %dms status=%d path=/api/v1/items/%d\n",
					fixedTime.Add(time.Duration(rng.IntN(1e6))*time.Second).Format(time.RFC3339), rng.IntN(20), rng.IntN(9000), rng.IntN(1e6), rng.IntN(500), 200+rng.IntN(3)*100, rng.IntN(1e5))
			}
			copy(b, text.Bytes())
			name = fmt.Sprintf("var/log/app%04d.log", i)
		case 2: // random: incompressible
			fill.Read(b)
			name = fmt.Sprintf("usr/lib/blob%04d.bin", i)
		case 3: // binary-like: random pages between zero pages
			for p := int64(0); p < n; p += 8 << 10 {
				fill.Read(b[p:min(n, p+4<<10)])
			}
			name = fmt.Sprintf("usr/bin/prog%04d", i)
		}
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			return err
		}
		budget -= n
	}
	return nil
}

// makeExt4 makes an ext4 file system of size bytes at path holding the
// tree. mkfs.ext4 -d would copy each source file's ctime, which nobody can
// set, so the file system is made empty and filled with debugfs, which
// stamps every inode with E2FSPROGS_FAKE_TIME: the same tree always gives
// the same bytes.
func makeExt4(path, tree string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	f.Close()
	env := append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	cmd := exec.Command("mkfs.ext4", "-q", "-F",
		"-U", "6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c0",
		"-E", "hash_seed=6f1ed6a1-0b32-4e4b-8f43-1d2b51e3a1c1,root_owner=0:0,lazy_itable_init=0",
		path)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	var script bytes.Buffer
	err = filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == tree {
			return err
		}
		rel, err := filepath.Rel(tree, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			fmt.Fprintf(&script, "mkdir %s\n", rel)
		} else {
			fmt.Fprintf(&script, "write %s %s\n", p, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cmds := filepath.Join(filepath.Dir(path), "debugfs.cmds")
	if err := os.WriteFile(cmds, script.Bytes(), 0o644); err != nil {
		return err
	}
	cmd = exec.Command("debugfs", "-w", "-f", cmds, path)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs: %v: %s", err, out)
	}
	return nil
}

// mbr returns a DOS partition table with two Linux partitions, the first
// active, and boot code that is not all zeros.
func mbr(p1Start, p1Size, p2Start, p2Size int64) []byte {
	b := make([]byte, 512)
	copy(b, []byte{0xfa, 0x31, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfb, 0xf4, 0xeb, 0xfd}) // cli; xor ax,ax; ...; hlt loop
	binary.LittleEndian.PutUint32(b[440:], 0x62656e63)
	entry := func(i int, active bool, start, size int64) {
		e := b[446+16*i:]
		if active {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS: use LBA
		e[4] = 0x83
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], uint32(start/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(size/512))
	}
	entry(0, true, p1Start, p1Size)
	entry(1, false, p2Start, p2Size)
	b[510], b[511] = 0x55, 0xaa
	return b
}

// copySparse copies the file at src into dst at off, skipping zero MiBs.
func copySparse(dst writerAt, off int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, mib)
	zero := make([]byte, mib)
	for pos := int64(0); ; pos += mib {
		n, err := io.ReadFull(f, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := dst.WriteAt(buf[:n], off+pos); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
