package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"vmimport/jdcloud"
	"vmimport/upload"
)

// ImportResult is what an import tells, for people and in --json.
type ImportResult struct {
	// Object is the imported object, s3://BUCKET/KEY.
	Object   string `json:"object,omitempty"`
	Region   string `json:"region"`
	Endpoint string `json:"endpoint"`
	ImageID  string `json:"image_id,omitempty"`
	// TaskID is the import task; `convert import-status TASK_ID` follows it.
	TaskID    jdcloud.TaskID `json:"task_id,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	// Credentials says where the API's credentials came from (never the
	// secret).
	Credentials string `json:"credentials,omitempty"`
	// Request is the ImportImage body sent.
	Request jdcloud.ImportImageRequest `json:"request"`
	// Status is "submitted" without --wait, else the task's last state
	// (finished, failed; pending or running at the time-out); "refused"
	// when ImportImage failed.
	Status string `json:"status"`
	// Task is the task's last state, with --wait.
	Task        *jdcloud.Task `json:"task,omitempty"`
	WaitSeconds float64       `json:"wait_seconds,omitempty"`
	// Error is the error that ended the import, if any.
	Error string `json:"error,omitempty"`
}

// importAfterUpload imports what a convert run uploaded, when --import or
// --wait asked for it: ImportImage with the body the upload's report holds,
// then, with --wait, a wait on the task. target is the upload's report
// (summary.Target). It returns nil, nil without --import.
func importAfterUpload(ctx context.Context, o *convertOptions, target any, stdout, stderr io.Writer) (*ImportResult, error) {
	if !o.imp.enabled() {
		return nil, nil
	}
	rep, ok := target.(*upload.Report)
	if !ok || rep == nil {
		return nil, errors.New("--import: the upload gave no report to import from")
	}
	if o.imp.api == nil {
		return nil, errors.New("--import: no client for the cloud's API")
	}
	changed := func(string) bool { return false }
	if o.check.fs != nil {
		changed = o.check.fs.Changed
	}
	if r := o.check.Report(); (r == nil || r.OS.OSType == "") && !changed("os-type") && !changed("platform") {
		fmt.Fprintf(stderr, "convert: warning: %s\n", osHint(rep.ImportImage))
	}
	return o.imp.submit(ctx, rep.ImportImage, "s3://"+rep.Bucket+"/"+rep.Key, o.progress, o.asJSON, stdout, stderr)
}

// importRequest is the API's request for the body the upload built.
func importRequest(b upload.ImportImageBody) jdcloud.ImportImageRequest {
	return jdcloud.ImportImageRequest{
		Architecture: b.Architecture, OSType: b.OSType, Platform: b.Platform, DiskFormat: b.DiskFormat,
		SystemDiskSizeGB: b.SystemDiskSizeGB, ImageURL: b.ImageURL, OSVersion: b.OSVersion, ImageName: b.ImageName,
		Description: b.Description, ForceImport: b.ForceImport, ClientToken: b.ClientToken,
	}
}

// submit calls ImportImage and, with --wait, follows the task to its end.
// Progress goes to stderr; the outcome to stdout unless asJSON (the
// caller prints the result then).
func (i *importOptions) submit(ctx context.Context, body upload.ImportImageBody, object, progressMode string, asJSON bool, stdout, stderr io.Writer) (*ImportResult, error) {
	req := importRequest(body)
	res := &ImportResult{Object: object, Region: i.api.Region(), Endpoint: i.api.Endpoint(), Credentials: i.creds, Request: req}
	r, err := i.api.ImportImage(ctx, req)
	if err != nil {
		res.Status, res.Error = "refused", err.Error()
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "convert: the object stays at %s; import it later with `convert import %s`\n", object, object)
		}
		return res, importError{fmt.Errorf("%w%s", err, i.credsHint(err))}
	}
	res.ImageID, res.TaskID, res.RequestID, res.Status = r.ImageID, r.TaskID, r.RequestID, "submitted"
	if !asJSON {
		fmt.Fprintf(stdout, "import submitted: image %s, task %s (region %s)\n", r.ImageID, r.TaskID, res.Region)
	}
	if !i.wait {
		if !asJSON {
			fmt.Fprintf(stdout, "follow it with:\n  convert import-status %s --wait --jdcloud-region %s\n", r.TaskID, res.Region)
		}
		return res, nil
	}
	start := time.Now()
	tasks, err := i.follow(ctx, []jdcloud.TaskID{r.TaskID}, progressMode, stderr)
	res.WaitSeconds = time.Since(start).Seconds()
	t := tasks[0]
	res.Task, res.Status = &t, t.TaskStatus
	if t.ImageID != "" {
		res.ImageID = t.ImageID
	}
	if err != nil {
		res.Error = err.Error()
		switch {
		case errors.Is(err, jdcloud.ErrTaskFailed):
			fmt.Fprintf(stderr, "convert: the object stays at %s; once the image is fixed, upload it again, or import it anew with `convert import %s --client-token NEW-TOKEN`\n", object, object)
		case errors.Is(err, jdcloud.ErrWaitTimeout):
			fmt.Fprintf(stderr, "convert: the import goes on in the cloud; follow it with `convert import-status %s --wait --jdcloud-region %s`\n", r.TaskID, res.Region)
		}
		return res, importError{fmt.Errorf("%w%s", err, i.credsHint(err))}
	}
	if !asJSON {
		fmt.Fprintf(stdout, "import finished: image %s is ready in region %s (task %s, %s)\n", res.ImageID, res.Region, r.TaskID,
			time.Duration(res.WaitSeconds*float64(time.Second)).Round(time.Second))
	}
	return res, nil
}

// follow waits for tasks to end, showing their progress on stderr: a bar
// for one task on a terminal, else a line whenever a task moves.
func (i *importOptions) follow(ctx context.Context, ids []jdcloud.TaskID, progressMode string, stderr io.Writer) ([]jdcloud.Task, error) {
	p := newTaskProgress(progressMode, stderr, len(ids))
	tasks, err := i.api.WaitTasks(ctx, ids, jdcloud.WaitOptions{
		Timeout: i.waitTimeout, MinInterval: i.pollInterval, MaxInterval: max(60*time.Second, i.pollInterval),
		Progress: p.update,
		Log:      func(s string) { p.log("convert: " + s) },
	})
	p.finish(err == nil)
	return tasks, err
}

// taskProgress shows how image tasks move.
type taskProgress struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	last map[jdcloud.TaskID]string
}

func newTaskProgress(mode string, w io.Writer, n int) *taskProgress {
	p := &taskProgress{w: w, last: map[jdcloud.TaskID]string{}}
	show := mode == "always"
	if mode == "auto" || mode == "" {
		if f, ok := w.(*os.File); ok {
			show = term.IsTerminal(int(f.Fd()))
		}
	}
	if show && n == 1 {
		p.bar = progressbar.NewOptions(100,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("import task: submitted"),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionFullWidth(),
			progressbar.OptionSetRenderBlankState(true),
		)
	}
	return p
}

func (p *taskProgress) update(t jdcloud.Task) {
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("import task %s: %s", t.TaskID, t.TaskStatus))
		p.bar.Set(t.Progress)
		return
	}
	line := fmt.Sprintf("%s %d%%", t.TaskStatus, t.Progress)
	if p.last[t.TaskID] == line {
		return
	}
	p.last[t.TaskID] = line
	fmt.Fprintf(p.w, "convert: import task %s: %s, %d%%\n", t.TaskID, t.TaskStatus, t.Progress)
}

func (p *taskProgress) log(s string) {
	if p.bar != nil {
		p.bar.Clear()
	}
	fmt.Fprintln(p.w, s)
}

func (p *taskProgress) finish(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		p.bar.Finish()
	} else {
		p.bar.Exit()
	}
	io.WriteString(p.w, "\n")
}
