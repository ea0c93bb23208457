package main

import (
	"context"
	"io"

	"vmimport/reader"
	"vmimport/writer"
)

// openTarget picks where the converted image goes from -o.
func openTarget(_ context.Context, o *convertOptions, _ reader.Image, stdout, _ io.Writer) (writer.Target, error) {
	if o.output == "-" {
		return writer.NewStream(stdout), nil
	}
	return writer.CreateFile(o.output)
}
