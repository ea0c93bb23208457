package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"vmimport/reader/image"
)

// refuseSameFile stops a run whose output is one of the files the image
// reads (the image itself, an extent, a backing file), through symbolic
// and hard links: `convert x.qcow2 -o x.qcow2` would replace the input
// with its own conversion. For -o - it looks at what stdout is.
func refuseSameFile(im image.Image, output string, stdout io.Writer) error {
	switch {
	case output == "-":
		f, ok := stdout.(*os.File)
		if !ok {
			return nil
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if err := image.SameFileInfo(im, "stdout", fi); err != nil {
			return fmt.Errorf("-o -: %w", err)
		}
	case strings.HasPrefix(output, "s3://"):
	default:
		if err := image.SameFile(im, output); err != nil {
			return fmt.Errorf("-o %s: %w", output, err)
		}
	}
	return nil
}
