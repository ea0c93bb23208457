package main

import (
	"context"
	"errors"
	"flag"

	"github.com/spf13/pflag"

	"vmimport/check"
	"vmimport/job"
	"vmimport/reader/image"
	"vmimport/stream"
)

// Exit codes, as documented in --help and the README.
const (
	exitOK        = 0
	exitFailure   = 1   // the conversion or upload failed (I/O, network, server)
	exitUsage     = 2   // bad command line
	exitBadInput  = 3   // the image is unreadable, unsupported, or breaks an import rule
	exitCancelled = 130 // interrupted (SIGINT, SIGTERM)
)

const exitCodesHelp = `Exit codes:
  0    success
  1    the conversion failed (I/O error, full disk, network, server)
  2    usage error (bad flags or arguments)
  3    bad input: unreadable, corrupt or unsupported image, or an import rule broken
  130  interrupted (Ctrl-C, SIGTERM): nothing was left under the output name
`

// usageError marks errors in the command line.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// inputError marks problems with the input image.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

// exitCoder errors carry their own exit code (convert check's findings).
type exitCoder interface{ ExitCode() int }

func exitCode(ctx context.Context, err error) int {
	var ue usageError
	var ie inputError
	var ec exitCoder
	var se *job.SpecError
	var je *job.InputError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.Is(err, pflag.ErrHelp), errors.Is(err, flag.ErrHelp):
		return exitOK
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return exitCancelled
	case errors.As(err, &ue), errors.As(err, &se), errors.Is(err, stream.ErrOptions):
		return exitUsage
	case errors.As(err, &ie), errors.As(err, &je), errors.Is(err, image.ErrCorrupt), errors.Is(err, image.ErrUnsupported),
		errors.Is(err, image.ErrNotAllowed), errors.Is(err, check.ErrRule):
		return exitBadInput
	}
	return exitFailure
}
