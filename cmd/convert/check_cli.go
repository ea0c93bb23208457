package main

import (
	"context"
	"io"

	"github.com/spf13/pflag"

	"vmimport/reader"
)

// checkOptions are the flags of the import readiness check.
type checkOptions struct{}

func (c *checkOptions) register(*pflag.FlagSet) {}

// importCheck runs the import readiness check before anything is written.
// The size rules run in runConvert already.
func importCheck(context.Context, *convertOptions, reader.Image, string, io.Writer) error {
	return nil
}
