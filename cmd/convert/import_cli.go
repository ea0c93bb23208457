package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"vmimport/jdcloud"
	"vmimport/job"
)

// importOptions are the flags of the import into the cloud (ImportImage and
// the wait on its task), shared by a convert run (--import), `convert
// import` and `convert import-status`.
type importOptions struct {
	doImport     bool
	wait         bool
	waitTimeout  time.Duration
	apiEndpoint  string
	pollInterval time.Duration
}

func (i *importOptions) register(fs *pflag.FlagSet, run bool) {
	if run {
		fs.BoolVar(&i.doImport, "import", false, "after the upload, import the object as a private image (ImportImage) and print the image and task ids")
		fs.BoolVar(&i.wait, "wait", false, "follow the import task until it ends (implies --import; a progress bar on a terminal); exit 0 when it finished, 5 when it failed")
	} else {
		fs.BoolVar(&i.wait, "wait", false, "follow the import task until it ends (a progress bar on a terminal); exit 0 when it finished, 5 when it failed")
	}
	i.registerAPI(fs)
}

// registerAPI adds the flags that say how to reach the API and wait.
func (i *importOptions) registerAPI(fs *pflag.FlagSet) {
	fs.DurationVar(&i.waitTimeout, "wait-timeout", job.DefaultWaitTimeout, "with --wait: give up following the task after this long (exit 8; the import goes on in the cloud)")
	fs.StringVar(&i.apiEndpoint, "jdcloud-api-endpoint", jdcloud.DefaultEndpoint, "the cloud's OpenAPI endpoint for ImportImage and the image tasks (private deployments, tests)")
	fs.DurationVar(&i.pollInterval, "poll-interval", job.DefaultPollInterval, "shortest time between two polls of the task (it grows to 60s while nothing moves)")
	_ = fs.MarkHidden("poll-interval")
}

// spec is the import part of a job spec.
func (i *importOptions) spec() job.ImportSpec {
	return job.ImportSpec{Enabled: i.doImport || i.wait, Wait: i.wait, WaitTimeout: i.waitTimeout, APIEndpoint: i.apiEndpoint, PollInterval: i.pollInterval}
}

// validate checks the API flags of import and import-status.
func (i *importOptions) validate(progress string) error {
	if err := checkProgressMode(progress); err != nil {
		return usageError{err}
	}
	if i.waitTimeout <= 0 {
		return usageError{fmt.Errorf("--wait-timeout %s: give a positive duration such as 6h", i.waitTimeout)}
	}
	if i.pollInterval <= 0 {
		return usageError{fmt.Errorf("--poll-interval %s: give a positive duration", i.pollInterval)}
	}
	return nil
}

// importError carries the exit code of a failed import (see exitCodesHelp).
type importError struct{ error }

func (e importError) Unwrap() error { return e.error }

// ExitCode: 5 the task failed, 6 the API refused the request, 7 it refused
// the credentials (or there were none), 8 the wait timed out, 130
// interrupted, 1 network and server errors.
func (e importError) ExitCode() int {
	switch err := e.error; {
	case errors.Is(err, context.Canceled):
		return exitCancelled
	case errors.Is(err, jdcloud.ErrTaskFailed):
		return exitImportFailed
	case errors.Is(err, jdcloud.ErrWaitTimeout):
		return exitWaitTimeout
	case errors.Is(err, jdcloud.ErrUnauthorized), errors.Is(err, jdcloud.ErrNoCredentials):
		return exitCredentials
	case errors.Is(err, jdcloud.ErrInvalidRequest):
		return exitRefused
	}
	var ue usageError
	var se *job.SpecError
	if errors.As(e.error, &ue) || errors.As(e.error, &se) {
		return exitUsage
	}
	return exitFailure
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
