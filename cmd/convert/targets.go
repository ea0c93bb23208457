package main

import (
	"context"
	"io"
	"strings"

	"vmimport/reader"
	"vmimport/writer"
)

// openTarget picks where the converted image goes from -o.
func openTarget(ctx context.Context, o *convertOptions, im reader.Image, stdout, stderr io.Writer) (writer.Target, error) {
	if o.output == "-" {
		return writer.NewStream(stdout), nil
	}
	if strings.HasPrefix(o.output, "s3://") || o.upload.bucket != "" || o.upload.key != "" {
		return openUpload(ctx, o, im, stderr)
	}
	return writer.CreateFile(o.output)
}
