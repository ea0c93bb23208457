package upload

import (
	"errors"
	"fmt"
	"strings"

	"vmimport/internal/objstore"
)

// Errors the upload returns, for errors.Is.
var (
	// ErrUploadExists is returned when an interrupted upload to the same
	// destination is recorded and --resume was not given.
	ErrUploadExists = errors.New("an interrupted upload to this object exists")

	// ErrCannotResume is wrapped by the errors of a resume that the
	// recorded upload does not allow (another source, output shape or part
	// size): the upload can only be aborted and begun anew.
	ErrCannotResume = errors.New("cannot resume the recorded upload")

	// errCopyRefused: the store does not do UploadPartCopy; zero parts are
	// then sent as bytes.
	errCopyRefused = errors.New("the store refuses UploadPartCopy")
)

// Error is a failed operation of an upload and its cause, like
// os.PathError: errors.Is(err, context.Canceled) and errors.As(err,
// &*objstore.Error) see through it. The store's answer is flattened into
// it (Code, Status, RequestID): nothing in it holds a request, its body or
// its connection, so that a failed disk kept in a batch's outcomes keeps
// no part buffer alive.
type Error struct {
	// Op says what was being done: "uploading", "completing the upload".
	Op string
	// Key is the object's key ("" when the operation is not about one).
	Key string
	// Part is the part number, 0 when the operation is not about one part.
	Part int32
	// Code, Status and RequestID are the store's answer, if one came:
	// its error code ("SlowDown"), the HTTP status, the request's id.
	Code      string
	Status    int
	RequestID string
	// Err is the cause: the store's *objstore.Error, context.Canceled,
	// or a check that failed.
	Err error
	// Msg, when set, is the whole message: the cause is already said in
	// its words ("bucket x does not exist"). Unwrap still gives Err.
	Msg string
}

// Error is "Op [part N]: cause", the cause on one line.
func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	op := e.Op
	if e.Part > 0 {
		op += fmt.Sprintf(" part %d", e.Part)
	}
	return op + ": " + short(e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// fail wraps a cause; nil stays nil.
func fail(op, key string, part int32, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Key: key, Part: part, Err: err}
	var se *objstore.Error
	if errors.As(err, &se) {
		e.Code, e.Status, e.RequestID = se.Code, se.Status, se.RequestID
	}
	return e
}

// httpStatus is the HTTP status of the store's answer behind err, 0 if
// there was none.
func httpStatus(err error) int { return objstore.Status(err) }

// apiCode is the store's error code behind err ("NoSuchUpload", ...), ""
// when it answered with none.
func apiCode(err error) string { return objstore.Code(err) }

// short is an error in one line.
func short(err error) string { return firstLine(err.Error()) }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// cannotResume keeps its message and matches ErrCannotResume.
type cannotResume struct{ error }

func (e cannotResume) Unwrap() error        { return e.error }
func (e cannotResume) Is(target error) bool { return target == ErrCannotResume }
