package job

import (
	"fmt"
	"path"
	"strings"
)

// extensionFormats are the output formats the output's name tells when -O
// is not given. .img is taken for RAW by default but does not refuse -O
// qcow2: cloud images named .img are often QCOW2.
var extensionFormats = map[string]string{".raw": "raw", ".img": "raw", ".qcow2": "qcow2"}

// outputExt is the extension of the output's name, lower-cased: of the
// file, or of the key of an s3:// output ("" for a key that is a folder,
// for stdout).
func (s *Spec) outputExt() string {
	name := s.Output
	switch s.Kind() {
	case ToStdout:
		return ""
	case ToBucket:
		_, key, _ := strings.Cut(strings.TrimPrefix(name, "s3://"), "/")
		if key == "" || strings.HasSuffix(key, "/") {
			return ""
		}
		name = key
	}
	// A file name may use either separator on Windows; path.Ext stops at
	// the first / only.
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return strings.ToLower(path.Ext(name))
}

// extensionFormat is the format the output's extension tells ("" when it
// tells none).
func (s *Spec) extensionFormat() string { return extensionFormats[s.outputExt()] }

// checkExtension refuses an -O the output's name contradicts: a .raw
// output written as QCOW2, a .qcow2 one as RAW.
func (s *Spec) checkExtension() error {
	ext := s.outputExt()
	want := extensionFormats[ext]
	if s.Format == "" || want == "" || want == s.Format || ext == ".img" {
		return nil
	}
	return fmt.Errorf("-O %s, but the output %s is named %s: give -O %s, or name the output .%s", s.Format, s.Output, ext, want, s.Format)
}
