package upload

import (
	"errors"
	"fmt"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithy "github.com/aws/smithy-go"
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
// &smithy.APIError) see through it.
type Error struct {
	// Op says what was being done: "uploading", "completing the upload".
	Op string
	// Key is the object's key ("" when the operation is not about one).
	Key string
	// Part is the part number, 0 when the operation is not about one part.
	Part int32
	// Err is the cause: the SDK's error, context.Canceled, or a check that
	// failed.
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
	return &Error{Op: op, Key: key, Part: part, Err: err}
}

// httpStatus is the HTTP status of an SDK error, 0 if there was no response.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}

// apiCode is the S3 error code of an error ("NoSuchUpload", ...), "" when
// the store did not answer with one.
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// short is an error in one line: an SDK error without the operation
// boilerplate, "Code: message".
func short(err error) string {
	var ue *Error
	if errors.As(err, &ue) {
		return firstLine(err.Error()) // already short
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg := ae.ErrorMessage()
		if msg == "" {
			return ae.ErrorCode()
		}
		return ae.ErrorCode() + ": " + msg
	}
	return firstLine(err.Error())
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// cannotResume keeps its message and matches ErrCannotResume.
type cannotResume struct{ error }

func (e cannotResume) Unwrap() error        { return e.error }
func (e cannotResume) Is(target error) bool { return target == ErrCannotResume }
