package uploadtest

import (
	"path/filepath"
	"strings"
	"testing"

	"vmimport/internal/testkit"
)

// TestSourceObjectNotOverwritten: an upload into the object it reads is
// refused before anything is written, however the source's endpoint is
// spelt (a trailing slash, localhost for 127.0.0.1, the object's own
// http:// URL); before, these spellings got past the guard and the object
// was replaced by its own conversion.
func TestSourceObjectNotOverwritten(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	disk := makeDisk(t, dir, 8*mib, []run{{mib, 2 * mib}})
	qcow := testkit.Convert(t, disk, filepath.Join(dir, "vm.qcow2"), "qcow2")
	put(t, e.bucket, "exports/vm.qcow2", qcow)
	before := e.objectSHA("exports/vm.qcow2")
	obj := "s3://" + e.bucket + "/exports/vm.qcow2"
	local := strings.Replace(e.proxy.URL, "127.0.0.1", "localhost", 1)
	for _, args := range [][]string{
		{obj, "-o", obj, "--source-endpoint", e.proxy.URL + "/"},
		{obj, "-o", obj, "--source-endpoint", local},
		// A key ending in / is named after the source: the same key.
		{obj, "-o", "s3://" + e.bucket + "/exports/", "--source-endpoint", local + "//"},
		{local + "/" + e.bucket + "/exports/vm.qcow2", "-o", obj},
	} {
		r := e.run(args...)
		if r.code != 2 || !strings.Contains(r.stderr, "the output is the source object") {
			t.Errorf("convert %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if e.objectSHA("exports/vm.qcow2") != before {
		t.Fatal("the source object was overwritten")
	}
}
