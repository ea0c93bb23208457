package vhd

import (
	"encoding/binary"
	"unicode/utf16"
)

// Builder writes dynamic and differencing VHD files from the specification,
// for tests: qemu-img cannot make a differencing VHD.
type Builder struct {
	DiskType   uint32
	Size       int64 // current size
	Cyl        uint16
	Heads, SPT uint8
	Creator    string
	UUID       [16]byte
	BlockSize  int64
	ParentUUID [16]byte
	ParentName string // header's Unicode name
	Locators   map[string]string
	// blocks maps a block index to its sector bitmap and data.
	Blocks map[int64]BlockData
}

type BlockData struct {
	Bitmap []byte
	Data   []byte
}

func PutFooter(b []byte, diskType uint32, dataOffset uint64, creator string, size int64, cyl uint16, heads, spt uint8, uuid [16]byte) {
	be := binary.BigEndian
	copy(b, "conectix")
	be.PutUint32(b[8:], 2)
	be.PutUint32(b[12:], 0x00010000)
	be.PutUint64(b[16:], dataOffset)
	copy(b[28:32], creator)
	be.PutUint32(b[32:], 0x000a0000)
	copy(b[36:40], "Wi2k")
	be.PutUint64(b[40:], uint64(size))
	be.PutUint64(b[48:], uint64(size))
	be.PutUint16(b[56:], cyl)
	b[58], b[59] = heads, spt
	be.PutUint32(b[60:], diskType)
	copy(b[68:84], uuid[:])
	be.PutUint32(b[64:], 0)
	be.PutUint32(b[64:], checksum(b[:footerSize], 64))
}

func utf16Bytes(s string, bigEndian bool) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		if bigEndian {
			binary.BigEndian.PutUint16(b[2*i:], c)
		} else {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
	}
	return b
}

// bytes lays the file out as Hyper-V does: footer copy, dynamic header,
// locator data, BAT, blocks, footer.
func (bd *Builder) Bytes() []byte {
	be := binary.BigEndian
	entries := (bd.Size + bd.BlockSize - 1) / bd.BlockSize
	bitmapSize := (bd.BlockSize/512/8 + 511) / 512 * 512
	out := make([]byte, 512+1024)
	var locs [][2]any
	for _, code := range []string{"W2ru", "W2ku", "MacX"} {
		name, ok := bd.Locators[code]
		if !ok {
			continue
		}
		var data []byte
		if code == "MacX" {
			data = []byte(name)
		} else {
			data = utf16Bytes(name, false)
		}
		off := len(out)
		padded := make([]byte, (len(data)+511)/512*512)
		copy(padded, data)
		out = append(out, padded...)
		locs = append(locs, [2]any{code, [3]int{off, len(data), len(padded)}})
	}
	batOff := len(out)
	bat := make([]byte, (entries*4+511)/512*512)
	for i := range bat {
		bat[i] = 0xff
	}
	out = append(out, bat...)
	for i := int64(0); i < entries; i++ {
		blk, ok := bd.Blocks[i]
		if !ok {
			continue
		}
		be.PutUint32(out[batOff+4*int(i):], uint32(len(out)/512))
		bm := make([]byte, bitmapSize)
		copy(bm, blk.Bitmap)
		data := make([]byte, bd.BlockSize)
		copy(data, blk.Data)
		out = append(out, bm...)
		out = append(out, data...)
	}
	h := out[512:1536]
	copy(h, "cxsparse")
	be.PutUint64(h[8:], ^uint64(0))
	be.PutUint64(h[16:], uint64(batOff))
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[28:], uint32(entries))
	be.PutUint32(h[32:], uint32(bd.BlockSize))
	copy(h[40:56], bd.ParentUUID[:])
	copy(h[64:576], utf16Bytes(bd.ParentName, true))
	for i, l := range locs {
		e := h[576+24*i:]
		copy(e, l[0].(string))
		v := l[1].([3]int)
		be.PutUint32(e[4:], uint32(v[2]/512))
		be.PutUint32(e[8:], uint32(v[1]))
		be.PutUint64(e[16:], uint64(v[0]))
	}
	be.PutUint32(h[36:], checksum(h, 36))
	ft := make([]byte, 512)
	PutFooter(ft, bd.DiskType, 512, bd.Creator, bd.Size, bd.Cyl, bd.Heads, bd.SPT, bd.UUID)
	copy(out, ft)
	return append(out, ft...)
}

// Checksum is the VHD checksum, for tests that damage and repair headers.
func Checksum(b []byte, sumAt int) uint32 { return checksum(b, sumAt) }
