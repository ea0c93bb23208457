package importtest

import (
	"strings"
	"testing"
	"time"

	"vmimport/internal/jdcloudtest"
	"vmimport/internal/testkit"
)

// TestStatusWords: a task status in another case (FINISHED), cancelled
// (either spelling), or a word the client does not know: the first two
// end the wait as finished and failed; an unknown word ends it with a
// clear error after a few polls (before, each waited until --wait-timeout,
// 6 hours by default).
func TestStatusWords(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 2})
	key := "img/sample.qcow2"
	e.uploadOnly(key)
	obj := "s3://" + e.bucket + "/" + key
	for _, c := range []struct {
		name  string
		spell func(string) string
		code  int
		msg   string
	}{
		{"upper case", strings.ToUpper, 0, ""},
		{"canceled", func(s string) string {
			if s == "finished" {
				return "Canceled"
			}
			return s
		}, 5, "the task was cancelled"},
		{"cancelled", func(s string) string {
			if s == "finished" {
				return "CANCELLED"
			}
			return s
		}, 5, "the task was cancelled"},
		{"unknown word", func(s string) string {
			if s == "finished" {
				return "succeeded"
			}
			return s
		}, 1, `image task 1`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.api.SpellStatus(c.spell)
			start := time.Now()
			r := e.run("import", obj, "--wait", "--wait-timeout", "2m", "--client-token", "t-"+strings.ReplaceAll(c.name, " ", "-"))
			if r.code != c.code || !strings.Contains(lastLine(r.stderr), c.msg) || time.Since(start) > time.Minute {
				t.Fatalf("exit %d after %s, want %d and %q\n%s", r.code, time.Since(start), c.code, c.msg, r.stderr)
			}
			if c.name == "unknown word" && !strings.Contains(lastLine(r.stderr), `status "succeeded"`) {
				t.Errorf("the unknown status is not named: %s", lastLine(r.stderr))
			}
		})
	}
}

// TestAPITextEscaped: an error body of the API holding escape sequences,
// U+202E or NUL reaches the terminal escaped, in messages and in --json;
// before, it was printed raw (a terminal obeys ESC ]0; ... and redraws).
func TestAPITextEscaped(t *testing.T) {
	testkit.Need(t, "qemu-img")
	e := newEnv(t, false, jdcloudtest.Options{Polls: 2})
	key := "img/sample.qcow2"
	e.uploadOnly(key)
	obj := "s3://" + e.bucket + "/" + key
	evil := "bad\x1b]0;pwned\x07 \x1b[2J\u202eexe.txt\x00end"
	for _, json := range []bool{false, true} {
		e.api.Inject(jdcloudtest.Fault{Op: "ImportImage", Status: 400, Code: "OUT_OF\x1b[31mRANGE", Message: evil})
		args := []string{"import", obj}
		if json {
			args = append(args, "--json")
		}
		r := e.run(args...)
		out := r.stdout + r.stderr
		if r.code != 6 || !strings.Contains(out, `bad\x1b]0;pwned\x07`) || !strings.Contains(out, `\u202e`) {
			t.Errorf("json %v: exit %d\n%q", json, r.code, out)
		}
		if strings.ContainsAny(out, "\x1b\x07\x00\u202e") {
			t.Errorf("json %v: a control character reached the terminal: %q", json, out)
		}
	}
	// A task's errorInfo too.
	e.api.FailTasks(func(jdcloudtest.Import) string { return evil })
	r := e.run("import", obj, "--wait", "--client-token", "t-evil")
	if r.code != 5 || strings.ContainsAny(r.stdout+r.stderr, "\x1b\x07\x00\u202e") || !strings.Contains(r.stderr, `\u202e`) {
		t.Errorf("task errorInfo: exit %d\n%q", r.code, r.stdout+r.stderr)
	}
}
