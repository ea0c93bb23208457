package job

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// TestDecisionsReplay: the choices recorded by one run are the choices a
// resumed run makes below the recorded offset, whatever it would decide on
// its own; past it the run decides anew.
func TestDecisionsReplay(t *testing.T) {
	const bs, virtual = 1 << 20, 300<<20 + 4096
	var laid int64
	first := newDecisions(virtual, bs, func() bool { return true }, func() int64 { return laid })
	var want []bool
	var wg sync.WaitGroup
	for i := int64(0); i*bs < virtual; i++ {
		c := i%3 == 0 || i%7 == 1
		want = append(want, c)
		// The workers decide out of order, concurrently.
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := first
			if !c {
				// A run that decided "plain" for this block.
				d = &decisions{blockSize: d.blockSize, bits: d.bits, busy: func() bool { return false }}
			}
			d.choose(i * bs)
		}()
	}
	wg.Wait()
	laid = 200 << 20
	rec := first.record()
	if !json.Valid(rec) || len(rec) > 400 {
		t.Fatalf("record of %d bytes: %s", len(rec), rec)
	}

	second := newDecisions(virtual, bs, func() bool { return true }, func() int64 { return 0 })
	through, err := second.resume(rec)
	if err != nil || through != 200<<20 {
		t.Fatalf("resume: %d, %v", through, err)
	}
	for i, w := range want {
		got := second.choose(int64(i) * bs)
		switch {
		case int64(i)*bs < through && got != w:
			t.Errorf("block %d: replayed %v, recorded %v", i, got, w)
		case int64(i)*bs >= through && !got:
			t.Errorf("block %d past the record: %v, want the run's own choice (true)", i, got)
		}
	}
	// What the resumed run records again holds the replayed choices.
	laid = virtual
	second.laidOut = func() int64 { return laid }
	third := newDecisions(virtual, bs, func() bool { return false }, func() int64 { return 0 })
	if _, err := third.resume(second.record()); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := third.choose(int64(i) * bs); int64(i)*bs < through && got != w {
			t.Errorf("block %d after a second resume: %v, want %v", i, got, w)
		}
	}
}

// TestDecisionsRefused: records that do not fit this run are not replayed.
func TestDecisionsRefused(t *testing.T) {
	d := newDecisions(64<<20, 1<<20, func() bool { return false }, func() int64 { return 0 })
	other := newDecisions(64<<20, 4<<20, func() bool { return true }, func() int64 { return 64 << 20 })
	other.choose(0)
	big := newDecisions(1<<40, 1<<20, func() bool { return true }, func() int64 { return 1 << 40 })
	for _, c := range []struct {
		rec  string
		want string
	}{
		{"", ""},
		{`{"other":{}}`, ""},
		{`{"compress":`, "decisions"},
		{string(other.record()), "blocks of 4194304 bytes"},
		{`{"compress":{"block_size":1048576,"through":1048576,"bits":"!!"}}`, "decisions"},
		{string(big.record()), "do not fit"},
		{`{"compress":{"block_size":1048576,"through":-5,"bits":""}}`, "do not fit"},
	} {
		through, err := d.resume(json.RawMessage(c.rec))
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) || err != nil && through != 0 {
			t.Errorf("%.60s: %d, %v; want %q", c.rec, through, err, c.want)
		}
	}
	if d.through != 0 || d.choose(0) {
		t.Errorf("a refused record was replayed")
	}
}

// TestCompressDefaults: uploads are QCOW2 with auto compression unless
// told otherwise; files are RAW, and compress only when asked, as before.
func TestCompressDefaults(t *testing.T) {
	for _, c := range []struct {
		spec                        Spec
		format, compress, algorithm string
	}{
		{Spec{Output: "s3://bkt/k"}, "qcow2", CompressAuto, "zlib"},
		{Spec{Output: "s3://bkt/k", QCOW2: QCOW2Spec{Compression: "zstd"}}, "qcow2", CompressAuto, "zstd"},
		{Spec{Output: "s3://bkt/k", QCOW2: QCOW2Spec{Compress: CompressAlways}}, "qcow2", CompressAlways, "zlib"},
		{Spec{Output: "s3://bkt/k", QCOW2: QCOW2Spec{Compress: CompressNever, Compression: "zstd"}}, "qcow2", CompressNever, ""},
		{Spec{Output: "s3://bkt/k", Format: "raw"}, "raw", "", ""},
		{Spec{Output: "x.img"}, "raw", "", ""},
		{Spec{Output: "x.qcow2", Format: "qcow2"}, "qcow2", CompressNever, ""},
		{Spec{Output: "x.qcow2", Format: "qcow2", QCOW2: QCOW2Spec{Compression: "zstd"}}, "qcow2", CompressAlways, "zstd"},
		{Spec{Output: "x.qcow2", Format: "qcow2", QCOW2: QCOW2Spec{Compress: CompressAuto}}, "qcow2", CompressAuto, ""},
	} {
		c.spec.Source = "/x/d.vmdk"
		if err := c.spec.Validate(); err != nil {
			t.Errorf("%+v: %v", c.spec, err)
			continue
		}
		d := c.spec.withDefaults()
		if d.Format != c.format || d.QCOW2.Compress != c.compress || d.QCOW2.Compression != c.algorithm {
			t.Errorf("%s %+v: format %s, compress %q, algorithm %q; want %s, %q, %q", c.spec.Output, c.spec.QCOW2, d.Format, d.QCOW2.Compress, d.QCOW2.Compression, c.format, c.compress, c.algorithm)
		}
	}
}
