package jdcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// ImportImageRequest is the body of ImportImage
// (POST /v1/regions/{regionId}/images:import). The fields go on the wire in
// the order the official SDKs send them.
type ImportImageRequest struct {
	Architecture     string `json:"architecture"`          // x86_64, arm64
	OSType           string `json:"osType"`                // linux, windows
	Platform         string `json:"platform"`              // Ubuntu, CentOS, Windows Server, Other Linux, Other Windows, ...
	DiskFormat       string `json:"diskFormat"`            // qcow2, vhd, vmdk, raw
	SystemDiskSizeGB int64  `json:"systemDiskSizeGB"`      // 40..500, a multiple of 10
	ImageURL         string `json:"imageUrl"`              // the object's link, intranet, same region
	OSVersion        string `json:"osVersion,omitempty"`   // 7.4, 22.04, ...
	ImageName        string `json:"imageName"`             //
	Description      string `json:"description,omitempty"` //
	ForceImport      bool   `json:"forceImport,omitempty"` // skip the cloud's own image checks
	// ClientToken makes the call idempotent: the API answers a repeated
	// token with the first call's result. At most 64 characters. With a
	// token, the client retries the call on server and network errors.
	ClientToken string `json:"clientToken,omitempty"`
	// BootMode (bios, uefi) exists in newer API versions only; empty
	// leaves it out (bios).
	BootMode string `json:"bootMode,omitempty"`
}

// Body is the JSON the request sends: as JSON.stringify writes it (no
// HTML escaping), so that it is byte for byte what the SDK sends.
func (r ImportImageRequest) Body() ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(r); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// MaxClientToken is the longest client token the API takes.
const MaxClientToken = 64

// ImportImageResult is ImportImage's answer.
type ImportImageResult struct {
	ImageID   string `json:"imageId"`
	TaskID    TaskID `json:"taskId"`
	RequestID string `json:"requestId,omitempty"`
}

// TaskID is an image task's id. The SDKs call it a string, an older
// document an integer (importTaskId): both are read, kept as text.
type TaskID string

// UnmarshalJSON reads a string or an integer.
func (t *TaskID) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*t = ""
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*t = TaskID(v)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("task id %s: neither a string nor a number", b)
	}
	if i, err := n.Int64(); err == nil {
		*t = TaskID(strconv.FormatInt(i, 10))
		return nil
	}
	// 1e3, 1000.0: an integer all the same, if a float holds it exactly.
	if f, err := n.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		*t = TaskID(strconv.FormatInt(int64(f), 10))
		return nil
	}
	return fmt.Errorf("task id %s: not an integer", b)
}

func (t TaskID) String() string { return string(t) }

// Task states.
const (
	TaskPending  = "pending"
	TaskRunning  = "running"
	TaskFailed   = "failed"
	TaskFinished = "finished"
)

// Task is an image task (taskSet[] of DescribeImageTasks).
type Task struct {
	TaskID       TaskID `json:"taskId"`
	Action       string `json:"action,omitempty"`
	TaskStatus   string `json:"taskStatus"`
	Progress     int    `json:"progress"` // 0..100
	ErrorInfo    string `json:"errorInfo,omitempty"`
	Message      string `json:"message,omitempty"`
	ImageID      string `json:"imageId,omitempty"`
	ImageName    string `json:"imageName,omitempty"`
	ImageURL     string `json:"imageUrl,omitempty"`
	CreatedTime  string `json:"createdTime,omitempty"`
	FinishedTime string `json:"finishedTime,omitempty"`
}

// UnmarshalJSON reads progress as a number or a string holding one.
func (t *Task) UnmarshalJSON(b []byte) error {
	type plain Task
	var v struct {
		plain
		Progress flexInt `json:"progress"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*t = Task(v.plain)
	t.Progress = int(min(max(v.Progress, 0), 100))
	t.TaskStatus = normalStatus(t.TaskStatus)
	if t.TaskStatus == TaskFailed && t.ErrorInfo == "" && t.Message == "" && isCancelled(v.TaskStatus) {
		t.ErrorInfo = "the task was cancelled"
	}
	return nil
}

// normalStatus is a task status as the client compares it: the API's words
// in any case, cancelled (or canceled) taken for failed; any other word
// stays as it came (Known tells it apart).
func normalStatus(s string) string {
	l := strings.ToLower(strings.TrimSpace(s))
	switch {
	case l == TaskPending, l == TaskRunning, l == TaskFailed, l == TaskFinished:
		return l
	case isCancelled(l):
		return TaskFailed
	}
	return s
}

func isCancelled(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cancelled", "canceled", "cancel":
		return true
	}
	return false
}

// Known says whether the task's status is one the client knows: pending,
// running, finished or failed (cancelled is failed).
func (t Task) Known() bool {
	switch t.TaskStatus {
	case TaskPending, TaskRunning, TaskFailed, TaskFinished:
		return true
	}
	return false
}

// Done says whether the task has ended, finished or failed.
func (t Task) Done() bool { return t.TaskStatus == TaskFinished || t.TaskStatus == TaskFailed }

// ImportImage asks the cloud to import the image at req.ImageURL. It is
// retried on server and network errors only when req.ClientToken is set.
func (c *Client) ImportImage(ctx context.Context, req ImportImageRequest) (*ImportImageResult, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"architecture", req.Architecture}, {"osType", req.OSType}, {"platform", req.Platform},
		{"diskFormat", req.DiskFormat}, {"imageUrl", req.ImageURL}, {"imageName", req.ImageName},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if req.SystemDiskSizeGB <= 0 {
		missing = append(missing, "systemDiskSizeGB")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ImportImage: %w: %s missing", ErrInvalidRequest, strings.Join(missing, ", "))
	}
	if len(req.ClientToken) > MaxClientToken {
		return nil, fmt.Errorf("ImportImage: %w: clientToken is %d characters, at most %d", ErrInvalidRequest, len(req.ClientToken), MaxClientToken)
	}
	body, err := req.Body()
	if err != nil {
		return nil, err
	}
	var raw struct {
		ImageID      string `json:"imageId"`
		TaskID       TaskID `json:"taskId"`
		ImportTaskID TaskID `json:"importTaskId"`
	}
	rid, err := c.do(ctx, call{
		op: "ImportImage", method: "POST", path: "/v1/regions/" + c.cfg.Region + "/images:import",
		body: body, retry: req.ClientToken != "",
	}, &raw)
	if err != nil {
		return nil, err
	}
	r := &ImportImageResult{ImageID: raw.ImageID, TaskID: raw.TaskID, RequestID: rid}
	if r.TaskID == "" {
		r.TaskID = raw.ImportTaskID
	}
	if r.TaskID == "" {
		return nil, fmt.Errorf("ImportImage: %w: no taskId in the answer (requestId %s)", ErrBadResponse, rid)
	}
	return r, nil
}

// DescribeImageTasksRequest selects image tasks.
type DescribeImageTasksRequest struct {
	TaskAction string   // ImportImage (default), ExportImage
	TaskIDs    []TaskID // taskIds.1, taskIds.2, ...
	TaskStatus string   // optional filter
	PageNumber int      // optional, from 1
	PageSize   int      // optional, 10..100
}

// ImageTasks is DescribeImageTasks' answer.
type ImageTasks struct {
	TaskSet    []Task `json:"taskSet"`
	TotalCount int    `json:"totalCount"`
	RequestID  string `json:"requestId,omitempty"`
}

// DescribeImageTasks reads image tasks
// (GET /v1/regions/{regionId}/imageTasks?taskAction=...&taskIds.1=...).
// It is retried on server and network errors.
func (c *Client) DescribeImageTasks(ctx context.Context, req DescribeImageTasksRequest) (*ImageTasks, error) {
	q := url.Values{}
	action := req.TaskAction
	if action == "" {
		action = "ImportImage"
	}
	q.Set("taskAction", action)
	for i, id := range req.TaskIDs {
		q.Set(fmt.Sprintf("taskIds.%d", i+1), string(id))
	}
	if req.TaskStatus != "" {
		q.Set("taskStatus", req.TaskStatus)
	}
	if req.PageNumber > 0 {
		q.Set("pageNumber", strconv.Itoa(req.PageNumber))
	}
	if req.PageSize > 0 {
		q.Set("pageSize", strconv.Itoa(req.PageSize))
	}
	var raw struct {
		TaskSet    []Task  `json:"taskSet"`
		TotalCount flexInt `json:"totalCount"`
	}
	rid, err := c.do(ctx, call{
		op: "DescribeImageTasks", method: "GET", path: "/v1/regions/" + c.cfg.Region + "/imageTasks", query: q, retry: true,
	}, &raw)
	if err != nil {
		return nil, err
	}
	return &ImageTasks{TaskSet: raw.TaskSet, TotalCount: int(raw.TotalCount), RequestID: rid}, nil
}

// tasksPerCall is how many task ids go into one DescribeImageTasks call:
// the SDK and the API document disagree on the page size limits (the SDK
// says 10..100), so few ids at a time, with a page that holds them all.
const tasksPerCall = 10

// Tasks reads the given tasks, tasksPerCall ids per call. Tasks the API
// does not know are missing from the answer.
func (c *Client) Tasks(ctx context.Context, action string, ids ...TaskID) (map[TaskID]Task, error) {
	out := make(map[TaskID]Task, len(ids))
	for start := 0; start < len(ids); start += tasksPerCall {
		chunk := ids[start:min(start+tasksPerCall, len(ids))]
		r, err := c.DescribeImageTasks(ctx, DescribeImageTasksRequest{TaskAction: action, TaskIDs: chunk, PageSize: tasksPerCall})
		if err != nil {
			return nil, err
		}
		for _, t := range r.TaskSet {
			out[t.TaskID] = t
		}
	}
	return out, nil
}
