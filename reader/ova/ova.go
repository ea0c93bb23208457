// Package ova reads the disks of an OVA: a tar archive holding an OVF
// descriptor (.ovf), the disk files it references and an optional manifest
// (.mf) of their SHA-1/SHA-256/SHA-512 digests.
//
// Nothing is extracted: the chosen disk is read in place, as a section of the
// tar file, and opened with format detection (usually a streamOptimized
// VMDK). Disks are numbered in the order of the OVF's DiskSection;
// Options.Disk picks one (default 0, the first).
//
// Digest verification: the chosen disk's digest from the manifest is
// computed over the tar member's bytes, from the first read of the disk (or
// from Verify) on, by a goroutine that hashes in order what the conversion
// pass reads (which reads the member out of order) and reads itself only
// the bytes the pass leaves out (see verifier): the member is read about
// once, which matters when it comes over the network. The Image implements
// image.Verifier: Verify waits for the hash and returns nil if it matched
// (or the manifest does not list the disk), an error wrapping
// image.ErrCorrupt if not. Callers call it after the pass and before
// committing the output.
package ova

import (
	"archive/tar"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"hash"
	"io"
	"path"
	"strconv"
	"strings"

	"vmimport/reader/image"
)

// Detector opens a disk found inside the OVA with format detection
// (reader.Detect); passed in to avoid an import cycle.
type Detector func(src image.Source, opts *image.Options) (image.Image, error)

const (
	maxMembers  = 10000
	maxOVF      = 16 << 20
	maxManifest = 1 << 20
	maxDisks    = 1024
)

// member is a regular file of the tar archive.
type member struct {
	name      string
	off, size int64
}

// Disk is one disk the OVF lists.
type Disk struct {
	ID       string
	Href     string // file name in the archive, "" for an empty disk
	Capacity int64  // bytes, -1 if the OVF gives none we can read
	RawCap   string // capacity and units as written
	Format   string
	Digest   string // "SHA256:hex" from the manifest, "" if none
	member   *member
}

// Image is the chosen disk of an OVA.
type Image struct {
	image.Image // the disk, opened by format detection
	path        string
	disks       []Disk
	chosen      int
	manifest    bool
	v           *verifier
}

var (
	_ image.Image    = (*Image)(nil)
	_ image.Verifier = (*Image)(nil)
)

func corrupt(p string, off int64, rule string, args ...any) error {
	return image.Corruptf(p, "ova", off, rule, args...)
}

// Open reads the archive's table of contents, the OVF and the manifest, and
// opens the disk opts.Disk with detect.
func Open(src image.Source, opts *image.Options, detect Detector) (*Image, error) {
	if opts == nil {
		opts = &image.Options{}
	}
	members, ovfM, mfM, err := scan(src)
	if err != nil {
		return nil, err
	}
	if ovfM == nil {
		return nil, corrupt(src.Path, -1, "the archive holds no .ovf descriptor")
	}
	ovfData, err := readMember(src, ovfM, maxOVF)
	if err != nil {
		return nil, err
	}
	var digests map[string]string
	if mfM != nil {
		mf, err := readMember(src, mfM, maxManifest)
		if err != nil {
			return nil, err
		}
		digests, err = parseManifest(mf, src.Path+"["+mfM.name+"]")
		if err != nil {
			return nil, err
		}
		if d, ok := digests[ovfM.name]; ok {
			if err := checkDigest(ovfData, d); err != nil {
				return nil, corrupt(src.Path, ovfM.off, "OVF descriptor %s: %v", ovfM.name, err)
			}
		}
	}
	disks, err := parseOVF(ovfData, src.Path+"["+ovfM.name+"]")
	if err != nil {
		return nil, err
	}
	if len(disks) == 0 {
		return nil, corrupt(src.Path, ovfM.off, "the OVF descriptor %s lists no disk", ovfM.name)
	}
	for i := range disks {
		d := &disks[i]
		if d.Href != "" {
			d.member = members[d.Href]
			d.Digest = digests[d.Href]
		}
	}
	n := opts.Disk
	if n < 0 || n >= len(disks) {
		return nil, fmt.Errorf("%s: ova: disk %d asked for, but the OVF lists %d disk(s), numbered from 0", src.Path, n, len(disks))
	}
	d := disks[n]
	switch {
	case d.Href == "":
		return nil, image.Unsupportedf(src.Path, "ova", -1, "disk %d (%s) has no file: it is an empty disk the OVF asks to create", n, d.ID)
	case d.member == nil:
		return nil, corrupt(src.Path, -1, "the OVF names disk file %q for disk %d (%s), but the archive does not hold it", d.Href, n, d.ID)
	}
	inner := image.Source{
		R:      io.NewSectionReader(src.R, d.member.off, d.member.size),
		Size:   d.member.size,
		Path:   src.Path + "[" + d.Href + "]",
		Fd:     -1,
		Remote: src.Remote,
	}
	var v *verifier
	if d.Digest != "" {
		v = newVerifier(inner.R, d.member.size, d.Digest, inner.Path)
		inner.R = v.tee()
	}
	// A disk inside an archive opens nothing else: no extents, no parents.
	o := *opts
	o.Open = nil
	o.AllowBacking = false
	o.Depth = opts.Depth + 1
	if o.Depth > 1 {
		return nil, image.Unsupportedf(src.Path, "ova", -1, "an OVA inside an OVA")
	}
	im, err := detect(inner, &o)
	if err != nil {
		return nil, fmt.Errorf("%s: ova: disk %d: %w", src.Path, n, err)
	}
	if d.Capacity > 0 && d.Capacity != im.Size() {
		opts.Warnf("%s: ova: the OVF gives disk %d a capacity of %d bytes, but the disk file's virtual size is %d bytes; using the disk file's", src.Path, n, d.Capacity, im.Size())
	}
	out := &Image{Image: im, path: src.Path, disks: disks, chosen: n, manifest: mfM != nil, v: v}
	if d.Digest == "" && mfM != nil {
		opts.Warnf("%s: ova: the manifest does not list %s: its bytes cannot be verified", src.Path, d.Href)
	}
	return out, nil
}

// scan lists the archive's regular files without reading their data.
func scan(src image.Source) (map[string]*member, *member, *member, error) {
	sr := io.NewSectionReader(src.R, 0, src.Size)
	tr := tar.NewReader(sr)
	members := map[string]*member{}
	var ovf, mf *member
	for i := 0; ; i++ {
		if i >= maxMembers {
			return nil, nil, nil, corrupt(src.Path, -1, "more than %d archive members", maxMembers)
		}
		pos, _ := sr.Seek(0, io.SeekCurrent)
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, nil, corrupt(src.Path, pos, "tar archive: %v", err)
		}
		if h.Typeflag != tar.TypeReg { // archive/tar reports old '\x00' entries as TypeReg
			continue
		}
		off, _ := sr.Seek(0, io.SeekCurrent)
		if h.Size < 0 || !image.CheckRange(off, h.Size, src.Size) {
			return nil, nil, nil, corrupt(src.Path, pos, "tar member %q (%d bytes at offset %d) passes the end of the archive (%d bytes)", h.Name, h.Size, off, src.Size)
		}
		name := strings.TrimPrefix(path.Clean(h.Name), "./")
		m := &member{name: name, off: off, size: h.Size}
		if _, dup := members[name]; dup {
			return nil, nil, nil, corrupt(src.Path, pos, "tar member %q appears twice", name)
		}
		members[name] = m
		switch strings.ToLower(path.Ext(name)) {
		case ".ovf":
			if ovf == nil {
				ovf = m
			}
		case ".mf":
			if mf == nil {
				mf = m
			}
		}
	}
	return members, ovf, mf, nil
}

func readMember(src image.Source, m *member, limit int64) ([]byte, error) {
	if m.size > limit {
		return nil, corrupt(src.Path, m.off, "%s is %d bytes, more than the %d allowed", m.name, m.size, limit)
	}
	b := make([]byte, m.size)
	if err := image.ReadFull(src.R, src.Size, b, m.off, src.Path, "ova", m.name); err != nil {
		return nil, err
	}
	return b, nil
}

// parseManifest reads lines "SHA256(name)= hex".
func parseManifest(b []byte, p string) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		algo, rest, ok1 := strings.Cut(line, "(")
		j := strings.LastIndex(rest, ")")
		if !ok1 || j < 0 {
			return nil, corrupt(p, -1, "manifest line %d: %q is not ALGO(file)= digest", i+1, line)
		}
		name, sum := rest[:j], strings.TrimSpace(rest[j+1:])
		sum = strings.TrimSpace(strings.TrimPrefix(sum, "="))
		algo = strings.ToUpper(strings.TrimSpace(algo))
		if _, err := newHash(algo); err != nil {
			return nil, image.Unsupportedf(p, "ova", -1, "manifest line %d: %v", i+1, err)
		}
		if _, err := hex.DecodeString(sum); err != nil || sum == "" {
			return nil, corrupt(p, -1, "manifest line %d: digest %q is not hexadecimal", i+1, sum)
		}
		out[strings.TrimPrefix(path.Clean(name), "./")] = algo + ":" + strings.ToLower(sum)
	}
	return out, nil
}

func newHash(algo string) (hash.Hash, error) {
	switch algo {
	case "SHA1":
		return sha1.New(), nil
	case "SHA256":
		return sha256.New(), nil
	case "SHA512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("digest algorithm %q is not SHA1, SHA256 or SHA512", algo)
}

func checkDigest(b []byte, digest string) error {
	algo, want, _ := strings.Cut(digest, ":")
	h, err := newHash(algo)
	if err != nil {
		return err
	}
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s digest %s does not match the manifest's %s", algo, got, want)
	}
	return nil
}

// The parts of an OVF envelope we read. encoding/xml matches these names
// in any namespace (ovf:, rasd:, or none).
type envelope struct {
	Files []struct {
		ID   string `xml:"id,attr"`
		Href string `xml:"href,attr"`
	} `xml:"References>File"`
	Disks []struct {
		ID       string `xml:"diskId,attr"`
		FileRef  string `xml:"fileRef,attr"`
		Capacity string `xml:"capacity,attr"`
		Units    string `xml:"capacityAllocationUnits,attr"`
		Format   string `xml:"format,attr"`
	} `xml:"DiskSection>Disk"`
}

func parseOVF(b []byte, p string) ([]Disk, error) {
	var env envelope
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	if err := dec.Decode(&env); err != nil {
		return nil, corrupt(p, dec.InputOffset(), "OVF descriptor is not valid XML: %v", err)
	}
	if len(env.Disks) > maxDisks {
		return nil, corrupt(p, -1, "OVF lists %d disks, more than %d", len(env.Disks), maxDisks)
	}
	files := map[string]string{}
	for _, f := range env.Files {
		files[f.ID] = f.Href
	}
	var disks []Disk
	for i, d := range env.Disks {
		disk := Disk{ID: d.ID, Format: d.Format, Capacity: -1, RawCap: d.Capacity}
		if d.Units != "" {
			disk.RawCap += " (" + d.Units + ")"
		}
		if d.FileRef != "" {
			href, ok := files[d.FileRef]
			if !ok {
				return nil, corrupt(p, -1, "disk %d (%s) refers to file id %q, which References does not list", i, d.ID, d.FileRef)
			}
			if href == "" || strings.Contains(href, "://") {
				return nil, image.Unsupportedf(p, "ova", -1, "disk %d (%s) lives at %q, outside the archive", i, d.ID, href)
			}
			disk.Href = strings.TrimPrefix(path.Clean(href), "./")
		}
		if c, err := capacity(d.Capacity, d.Units); err == nil {
			disk.Capacity = c
		}
		disks = append(disks, disk)
	}
	return disks, nil
}

// capacity turns an OVF capacity and its allocation units ("byte",
// "byte * 2^30", "byte * 1024", "" for bytes) into bytes.
func capacity(c, units string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(c), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("capacity %q is not a number", c)
	}
	mult := int64(1)
	u := strings.ReplaceAll(strings.ToLower(units), " ", "")
	switch {
	case u == "" || u == "byte" || u == "bytes":
	case strings.HasPrefix(u, "byte*2^"):
		e, err := strconv.Atoi(u[len("byte*2^"):])
		if err != nil || e < 0 || e > 62 {
			return 0, fmt.Errorf("units %q", units)
		}
		mult = 1 << e
	case strings.HasPrefix(u, "byte*"):
		m, err := strconv.ParseInt(u[len("byte*"):], 10, 64)
		if err != nil || m <= 0 {
			return 0, fmt.Errorf("units %q", units)
		}
		mult = m
	default:
		return 0, fmt.Errorf("units %q", units)
	}
	if n > image.MaxVirtualSize/mult {
		return 0, fmt.Errorf("capacity %s %s is too large", c, units)
	}
	return n * mult, nil
}

// ReadAt reads the disk and starts the digest check on first use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if im.v != nil {
		im.v.start()
	}
	return im.Image.ReadAt(p, off)
}

// Unwrap returns the disk image.
func (im *Image) Unwrap() image.Image { return im.Image }

// Verify waits for the chosen disk's digest and compares it with the
// manifest's. It returns nil when the manifest does not list the disk.
func (im *Image) Verify() error {
	if im.v == nil {
		return nil
	}
	return im.v.verify()
}

// Digest is the chosen disk's digest in the manifest ("SHA256:hex"), ""
// when the manifest does not list it or there is no manifest.
func (im *Image) Digest() string { return im.disks[im.chosen].Digest }

// Disks lists the disks of the OVF, in its order.
func (im *Image) Disks() []Disk { return append([]Disk(nil), im.disks...) }

// Info describes the OVA and the chosen disk: every disk of the OVF with
// its capacity, then the disk's own fields.
func (im *Image) Info() image.Info {
	in := im.Image.Info()
	info := image.Info{
		Format:      "ova",
		Subformat:   strings.TrimSpace(in.Format + " " + in.Subformat),
		VirtualSize: in.VirtualSize,
		ClusterSize: in.ClusterSize,
		Compression: in.Compression,
		Path:        im.path,
	}
	for i, d := range im.disks {
		v := d.ID
		if d.Href != "" {
			v += ": " + d.Href
		} else {
			v += ": (no file)"
		}
		if d.Capacity >= 0 {
			v += fmt.Sprintf(", capacity %d bytes (%.1f MiB)", d.Capacity, float64(d.Capacity)/(1<<20))
		} else if d.RawCap != "" {
			v += ", capacity " + d.RawCap
		}
		if d.Format != "" {
			v += ", format " + d.Format
		}
		if i == im.chosen {
			v += " [selected]"
		}
		data := map[string]any{"id": d.ID, "file": d.Href, "selected": i == im.chosen}
		if d.Capacity >= 0 {
			data["capacity"] = d.Capacity
		}
		if d.Format != "" {
			data["format"] = d.Format
		}
		info.Fields = append(info.Fields, image.Fact(fmt.Sprintf("disk %d", i), data, v))
	}
	switch d := im.disks[im.chosen]; {
	case d.Digest != "":
		info.Fields = append(info.Fields, image.Field{Name: "manifest digest", Value: d.Digest})
	case im.manifest:
		info.Fields = append(info.Fields, image.Field{Name: "manifest digest", Value: "none for this disk"})
	default:
		info.Fields = append(info.Fields, image.Field{Name: "manifest", Value: "none"})
	}
	info.Fields = append(info.Fields, in.Fields...) // the selected disk's own facts
	return info
}

// Close stops the digest check and closes the disk.
func (im *Image) Close() error {
	if im.v != nil {
		im.v.stop()
	}
	return im.Image.Close()
}
