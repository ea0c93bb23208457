package job

import (
	"fmt"
	"os"

	"vmimport/reader/image"
)

// refuseSameFile stops a job whose output is one of the files the image
// reads (the image itself, an extent, a backing file), through symbolic
// and hard links: `convert x.qcow2 -o x.qcow2` would replace the input
// with its own conversion. For "-" it looks at what Env.Stdout is.
func (j *run) refuseSameFile(im image.Image) error {
	switch j.s.Kind() {
	case ToStdout:
		f, ok := j.env.Stdout.(*os.File)
		if !ok {
			return nil
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if err := image.SameFileInfo(im, "stdout", fi); err != nil {
			return &SpecError{fmt.Errorf("-o -: %w", err)}
		}
	case ToFile:
		if err := image.SameFile(im, j.s.Output); err != nil {
			return &SpecError{fmt.Errorf("-o %s: %w", j.s.Output, err)}
		}
	}
	return nil
}
