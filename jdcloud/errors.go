package jdcloud

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"vmimport/internal/safetext"
)

// Errors of the package. Errors returned by the client match one of them
// with errors.Is; errors.As gives the *APIError, *NetError or *TaskError
// with the details.
var (
	// ErrNoCredentials: no AccessKey pair was found.
	ErrNoCredentials = errors.New("no credentials for the cloud's API")
	// ErrInvalidRequest: the API refused the request as invalid (HTTP 400,
	// 404, 409 and other 4xx but 401, 403 and 429): bad input.
	ErrInvalidRequest = errors.New("the cloud's API refused the request")
	// ErrUnauthorized: the API refused the credentials or the signature
	// (HTTP 401), or the account lacks the permission (HTTP 403).
	ErrUnauthorized = errors.New("the cloud's API refused the credentials")
	// ErrThrottled: HTTP 429 after every retry.
	ErrThrottled = errors.New("the cloud's API throttled the requests")
	// ErrServer: HTTP 5xx after every retry.
	ErrServer = errors.New("the cloud's API failed")
	// ErrNetwork: the API could not be reached (connection refused or
	// reset, time-out) after every retry.
	ErrNetwork = errors.New("the cloud's API could not be reached")
	// ErrBadResponse: an answer that is not the JSON the API documents.
	ErrBadResponse = errors.New("unexpected answer from the cloud's API")
	// ErrTaskFailed: an image task ended in the failed state.
	ErrTaskFailed = errors.New("image task failed")
	// ErrWaitTimeout: a task had not ended when the wait's time-out came.
	ErrWaitTimeout = errors.New("image task still running at the time-out")
	// ErrUnknownStatus: a task's status stayed one the client does not
	// know; it matches ErrBadResponse too.
	ErrUnknownStatus = fmt.Errorf("%w: unknown task status", ErrBadResponse)
)

// APIError is an error answer of the OpenAPI:
// {"requestId": ..., "error": {"code": 400, "status": "OUT_OF_RANGE", "message": ...}}.
type APIError struct {
	Operation  string // ImportImage, DescribeImageTasks
	HTTPStatus int    // the HTTP status of the answer
	Code       int    // error.code (usually the HTTP status again)
	Status     string // error.status: OUT_OF_RANGE, INVALID_ARGUMENT, ACCESS_ERROR, ...
	Message    string // error.message
	RequestID  string // requestId, for the cloud's support
}

func (e *APIError) Error() string {
	var b strings.Builder
	if e.Operation != "" {
		b.WriteString(e.Operation + ": ")
	}
	fmt.Fprintf(&b, "HTTP %d", e.HTTPStatus)
	if e.Status != "" {
		b.WriteString(" " + safetext.Escape(e.Status))
	}
	if e.Message != "" {
		b.WriteString(": " + oneLine(e.Message))
	}
	if e.RequestID != "" {
		b.WriteString(" (requestId " + safetext.Escape(e.RequestID) + ")")
	}
	return b.String()
}

// Is matches the sentinel of the error's class.
func (e *APIError) Is(target error) bool { return target == e.class() }

func (e *APIError) class() error {
	switch s := e.HTTPStatus; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return ErrUnauthorized
	case s == http.StatusTooManyRequests:
		return ErrThrottled
	case s >= 500:
		return ErrServer
	case s >= 400:
		return ErrInvalidRequest
	}
	return ErrBadResponse // an error body with a 2xx/3xx status
}

// Temporary says whether a retry may succeed: throttling and server errors.
func (e *APIError) Temporary() bool {
	c := e.class()
	return c == ErrThrottled || c == ErrServer
}

// NetError is a request that got no answer: connection refused or reset,
// a time-out, a TLS failure.
type NetError struct {
	Operation string
	URL       string
	Attempts  int
	Err       error
}

func (e *NetError) Error() string {
	return fmt.Sprintf("%s: %s: %s (after %d attempts)", e.Operation, e.URL, oneLine(e.Err.Error()), e.Attempts)
}

// Unwrap gives the transport's error.
func (e *NetError) Unwrap() error { return e.Err }

// Is matches ErrNetwork.
func (e *NetError) Is(target error) bool { return target == ErrNetwork }

// TaskError is a task that ended failed.
type TaskError struct {
	Task Task
}

func (e *TaskError) Error() string {
	msg := e.Task.ErrorInfo
	if msg == "" {
		msg = e.Task.Message
	}
	if msg == "" {
		msg = "no reason given"
	}
	return fmt.Sprintf("%s task %s failed: %s", orDefault(e.Task.Action, "image"), e.Task.TaskID, oneLine(msg))
}

// Is matches ErrTaskFailed.
func (e *TaskError) Is(target error) bool { return target == ErrTaskFailed }

// oneLine joins the lines of s with "; " so that every error is one line,
// and escapes what a terminal would obey (the API's text comes from
// outside: safetext.Line).
func oneLine(s string) string {
	return safetext.Line(s)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
