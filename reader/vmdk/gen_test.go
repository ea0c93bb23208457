package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zlib"
)

// genOpts shape a sparse extent written by genSparse, the test's own VMDK
// writer for layouts qemu-img does not write (grain sizes other than 64
// KiB, the grain directory in the footer of a stream) and for damaged files.
type genOpts struct {
	grainSectors uint64 // default 128
	gtes         uint32 // entries per grain table, default 512
	stream       bool   // compressed grains behind markers
	footer       bool   // stream: grain directory through the footer
	zeroedGrain  bool   // all-zero grains get GTE 1
	redundant    bool   // write a redundant grain directory too
	parent       string // parentFileNameHint
}

func sectors(n int) int { return (n + 511) / 512 }

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func genHeader(o genOpts, capacity, descOff, descSize, rgd, gd, overhead uint64) []byte {
	h := make([]byte, 512)
	le := binary.LittleEndian
	copy(h, "KDMV")
	version, flags := uint32(1), uint32(flagNewlineTest)
	if o.redundant {
		flags |= flagRedundantGT
	}
	if o.zeroedGrain {
		version = 2
		flags |= flagZeroedGrain
	}
	if o.stream {
		version = 3
		flags |= flagCompressed | flagMarkers
	}
	le.PutUint32(h[4:], version)
	le.PutUint32(h[8:], flags)
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], o.grainSectors)
	le.PutUint64(h[28:], descOff)
	le.PutUint64(h[36:], descSize)
	le.PutUint32(h[44:], o.gtes)
	le.PutUint64(h[48:], rgd)
	le.PutUint64(h[56:], gd)
	le.PutUint64(h[64:], overhead)
	copy(h[73:], "\n \r\n")
	if o.stream {
		le.PutUint16(h[77:], compressDeflate)
	}
	return h
}

func metaMarker(numSectors uint64, typ uint32) []byte {
	m := make([]byte, 512)
	binary.LittleEndian.PutUint64(m, numSectors)
	binary.LittleEndian.PutUint32(m[12:], typ)
	return m
}

// genSparse writes raw (a whole number of sectors) as a sparse extent.
func genSparse(raw []byte, o genOpts) []byte {
	if o.grainSectors == 0 {
		o.grainSectors = 128
	}
	if o.gtes == 0 {
		o.gtes = 512
	}
	capacity := uint64(len(raw)) / 512
	gb := int(o.grainSectors) * 512
	numGrains := (int(capacity) + int(o.grainSectors) - 1) / int(o.grainSectors)
	numGTs := (numGrains + int(o.gtes) - 1) / int(o.gtes)
	createType := "monolithicSparse"
	if o.stream {
		createType = "streamOptimized"
	}
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=%q\n\n# Extent description\nRW %d SPARSE \"x.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"7\"\nddb.adapterType = \"lsilogic\"\n", createType, capacity)
	if o.parent != "" {
		desc = fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=22345678\nparentCID=12345678\nparentFileNameHint=%q\ncreateType=%q\n\n# Extent description\nRW %d SPARSE \"x.vmdk\"\n", o.parent, createType, capacity)
	}
	descB := pad([]byte(desc))
	descSize := uint64(len(descB) / 512)
	gte := make([]uint32, numGTs*int(o.gtes))
	zero := make([]byte, gb)
	grainOf := func(g int) []byte {
		b := raw[g*gb : min(len(raw), (g+1)*gb)]
		return b
	}
	if !o.stream {
		gdSectors := sectors(numGTs * 4)
		gtSectors := sectors(int(o.gtes) * 4)
		rgd := uint64(0)
		next := uint64(1 + descSize)
		if o.redundant {
			rgd = next
			next += uint64(gdSectors + numGTs*gtSectors)
		}
		gd := next
		next += uint64(gdSectors + numGTs*gtSectors)
		overhead := (next + o.grainSectors - 1) / o.grainSectors * o.grainSectors
		out := make([]byte, overhead*512)
		copy(out, genHeader(o, capacity, 1, descSize, rgd, gd, overhead))
		copy(out[512:], descB)
		sec := overhead
		for g := range numGrains {
			b := grainOf(g)
			if bytes.Equal(b, zero[:len(b)]) {
				if o.zeroedGrain {
					gte[g] = 1
				}
				continue
			}
			gte[g] = uint32(sec)
			out = append(out, b...)
			out = append(out, make([]byte, gb-len(b))...)
			sec += o.grainSectors
		}
		writeDir := func(at uint64) {
			gtBase := at + uint64(gdSectors)
			for t := range numGTs {
				binary.LittleEndian.PutUint32(out[int(at)*512+t*4:], uint32(gtBase)+uint32(t*gtSectors))
				for i := range int(o.gtes) {
					binary.LittleEndian.PutUint32(out[int(gtBase)*512+t*gtSectors*512+i*4:], gte[t*int(o.gtes)+i])
				}
			}
		}
		writeDir(gd)
		if o.redundant {
			writeDir(rgd)
		}
		return out
	}
	out := append([]byte{}, make([]byte, 512)...)
	out = append(out, descB...)
	for g := range numGrains {
		b := grainOf(g)
		if bytes.Equal(b, zero[:len(b)]) {
			if o.zeroedGrain {
				gte[g] = 1
			}
			continue
		}
		var z bytes.Buffer
		w, _ := zlib.NewWriterLevel(&z, zlib.BestSpeed)
		w.Write(b)
		w.Close()
		gte[g] = uint32(len(out) / 512)
		m := make([]byte, 12)
		binary.LittleEndian.PutUint64(m, uint64(g)*o.grainSectors)
		binary.LittleEndian.PutUint32(m[8:], uint32(z.Len()))
		out = append(out, m...)
		out = append(out, z.Bytes()...)
		out = pad(out)
	}
	gtSectors := sectors(int(o.gtes) * 4)
	gdEnt := make([]byte, numGTs*4)
	for t := range numGTs {
		out = append(out, metaMarker(uint64(gtSectors), markerGT)...)
		binary.LittleEndian.PutUint32(gdEnt[t*4:], uint32(len(out)/512))
		gt := make([]byte, gtSectors*512)
		for i := range int(o.gtes) {
			binary.LittleEndian.PutUint32(gt[i*4:], gte[t*int(o.gtes)+i])
		}
		out = append(out, gt...)
	}
	out = append(out, metaMarker(uint64(sectors(len(gdEnt))), markerGD)...)
	gd := uint64(len(out) / 512)
	out = append(out, pad(gdEnt)...)
	if o.footer {
		copy(out, genHeader(o, capacity, 1, descSize, 0, gdAtEnd, 1+descSize))
		out = append(out, metaMarker(1, markerFooter)...)
		out = append(out, genHeader(o, capacity, 1, descSize, 0, gd, 1+descSize)...)
	} else {
		copy(out, genHeader(o, capacity, 1, descSize, 0, gd, 1+descSize))
	}
	out = append(out, metaMarker(0, markerEOS)...)
	return out
}
