package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"vmimport/jdcloud"
)

// Every class of import failure has its exit code, as --help and the
// README document them.
func TestImportExitCodes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		code int
	}{
		{&jdcloud.TaskError{Task: jdcloud.Task{TaskID: "1", TaskStatus: "failed", ErrorInfo: "x"}}, exitImportFailed},
		{&jdcloud.APIError{HTTPStatus: 400, Status: "OUT_OF_RANGE"}, exitRefused},
		{&jdcloud.APIError{HTTPStatus: 409, Status: "CONFLICT"}, exitRefused},
		{&jdcloud.APIError{HTTPStatus: 404}, exitRefused},
		{&jdcloud.APIError{HTTPStatus: 401}, exitCredentials},
		{&jdcloud.APIError{HTTPStatus: 403}, exitCredentials},
		{jdcloud.ErrNoCredentials, exitCredentials},
		{fmt.Errorf("%w: task 1 running at 5%%", jdcloud.ErrWaitTimeout), exitWaitTimeout},
		{&jdcloud.APIError{HTTPStatus: 500}, exitFailure},
		{&jdcloud.APIError{HTTPStatus: 429}, exitFailure},
		{&jdcloud.NetError{Operation: "ImportImage", Err: errors.New("connection refused")}, exitFailure},
		{fmt.Errorf("x: %w", jdcloud.ErrBadResponse), exitFailure},
		{fmt.Errorf("DescribeImageTasks: %w", context.Canceled), exitCancelled},
		{usageError{errors.New("bad")}, exitUsage},
	} {
		if got := exitCode(ctx, importError{tc.err}); got != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.code)
		}
		// Wrapped further, the code stays.
		if got := exitCode(ctx, fmt.Errorf("import: %w", importError{tc.err})); got != tc.code {
			t.Errorf("wrapped %v: exit %d, want %d", tc.err, got, tc.code)
		}
	}
}

func TestImportUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"import"}, "give one object"},
		{[]string{"import", "http://x/y"}, "s3://"},
		{[]string{"import", "s3://bucket/folder/"}, "not a folder"},
		{[]string{"import", "s3://bkt/k", "--progress", "sometimes"}, "--progress"},
		{[]string{"import", "s3://bkt/k", "--wait-timeout", "0s"}, "--wait-timeout"},
		{[]string{"import", "s3://bkt/k", "--client-token", strings.Repeat("t", 65)}, "at most 64"},
		{[]string{"import-status"}, "task ids"},
		{[]string{"import-status", " "}, "empty task id"},
		{[]string{"disk.raw", "-o", "out.raw", "--import"}, "need an upload"},
		{[]string{"disk.raw", "-o", "out.raw", "--wait"}, "need an upload"},
		{[]string{"disk.raw", "-o", "s3://bkt/k", "--import", "--wait-timeout", "-1s"}, "--wait-timeout"},
	} {
		code, _, errOut := convertCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.msg) {
			t.Errorf("convert %s: exit %d, want 2 and %q\n%s", strings.Join(tc.args, " "), code, tc.msg, errOut)
		}
	}
}
