package jdcloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"vmimport/internal/safetext"
)

// WaitOptions shape a wait on image tasks.
type WaitOptions struct {
	// Action is the tasks' taskAction (default ImportImage).
	Action string
	// Timeout ends the wait with ErrWaitTimeout (0: only ctx ends it).
	Timeout time.Duration
	// MinInterval and MaxInterval bound the time between two polls
	// (default 5 s and 60 s): it starts at MinInterval and grows by half
	// each poll in which no task moved, back to MinInterval when one did.
	MinInterval, MaxInterval time.Duration
	// NotFoundGrace is how long a task may be missing from the answers
	// before the wait gives up on it (default 2 minutes): a new task may
	// take a moment to show.
	NotFoundGrace time.Duration
	// UnknownPolls is how many polls in a row may answer a status the
	// client does not know (not pending, running, finished, failed or
	// cancelled, in any case) before the wait ends with ErrUnknownStatus
	// (default 3): waiting on it would last until the time-out.
	UnknownPolls int
	// Progress is called with every task after every poll. May be nil.
	Progress func(Task)
	// Log receives a line when a poll fails and the wait goes on. May be
	// nil.
	Log func(string)
}

// WaitTask polls one task until it ends. It returns the last state seen;
// the error is nil when the task finished, a *TaskError (ErrTaskFailed)
// when it failed, ErrWaitTimeout at the time-out, or the API's error.
func (c *Client) WaitTask(ctx context.Context, id TaskID, o WaitOptions) (Task, error) {
	ts, err := c.WaitTasks(ctx, []TaskID{id}, o)
	return ts[0], err
}

// WaitTasks polls tasks together until every one has ended. It returns
// the last state of each, in the order of ids, and an error that joins a
// *TaskError for each failed task, or ErrWaitTimeout, or the API's error
// that stopped the wait.
//
// Server, throttling and network errors that outlast the client's retries
// do not end the wait (an import takes hours; a network outage may take
// minutes): the wait logs them and polls again. Refused credentials or
// requests end it.
func (c *Client) WaitTasks(ctx context.Context, ids []TaskID, o WaitOptions) ([]Task, error) {
	if o.MinInterval <= 0 {
		o.MinInterval = 5 * time.Second
	}
	if o.MaxInterval < o.MinInterval {
		o.MaxInterval = max(60*time.Second, o.MinInterval)
	}
	if o.NotFoundGrace <= 0 {
		o.NotFoundGrace = 2 * time.Minute
	}
	if o.UnknownPolls <= 0 {
		o.UnknownPolls = 3
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, ErrWaitTimeout)
		defer cancel()
	}
	last := make([]Task, len(ids))
	for i, id := range ids {
		last[i] = Task{TaskID: id, Action: o.Action}
	}
	start := time.Now()
	interval := o.MinInterval
	unknown := make([]int, len(ids)) // polls in a row with a status not known
	var lastErr error
	for {
		got, err := c.Tasks(ctx, o.Action, pending(ids, last)...)
		switch {
		case err == nil:
			lastErr = nil
		case errors.Is(err, ErrServer), errors.Is(err, ErrNetwork), errors.Is(err, ErrThrottled), errors.Is(err, ErrBadResponse):
			if ctx.Err() == nil {
				o.Log(fmt.Sprintf("polling the image tasks: %v; trying again", err))
				lastErr = err
			}
		default:
			if ctx.Err() == nil {
				return last, err
			}
		}
		if ctx.Err() != nil {
			return last, waitEnded(ctx, ids, last, lastErr)
		}
		moved := false
		var missing []string
		for i, id := range ids {
			if last[i].Done() {
				continue
			}
			t, ok := got[id]
			if !ok {
				if err == nil && time.Since(start) > o.NotFoundGrace {
					missing = append(missing, string(id))
				}
				continue
			}
			if t.TaskID == "" {
				t.TaskID = id
			}
			if t.TaskStatus != last[i].TaskStatus || t.Progress != last[i].Progress {
				moved = true
			}
			last[i] = t
			if o.Progress != nil {
				o.Progress(t)
			}
			if t.Known() {
				unknown[i] = 0
			} else if unknown[i]++; unknown[i] >= o.UnknownPolls {
				return last, fmt.Errorf("%w: image task %s answered the status %q %d times in a row: not pending, running, finished, failed or cancelled; see the task in the cloud's console", ErrUnknownStatus, id, safetext.Escape(t.TaskStatus), unknown[i])
			}
		}
		if len(missing) > 0 {
			return last, fmt.Errorf("%w: image task %s not found in region %s after %s", ErrInvalidRequest, strings.Join(missing, ", "), c.cfg.Region, o.NotFoundGrace)
		}
		if len(pending(ids, last)) == 0 {
			var errs []error
			for _, t := range last {
				if t.TaskStatus == TaskFailed {
					errs = append(errs, &TaskError{Task: t})
				}
			}
			return last, errors.Join(errs...)
		}
		if moved {
			interval = o.MinInterval
		} else {
			interval = min(interval*3/2, o.MaxInterval)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, waitEnded(ctx, ids, last, lastErr)
		case <-t.C:
		}
	}
}

// pending lists the tasks that have not ended.
func pending(ids []TaskID, last []Task) []TaskID {
	var p []TaskID
	for i, id := range ids {
		if !last[i].Done() {
			p = append(p, id)
		}
	}
	return p
}

// waitEnded is the error of a wait its context ended: the time-out, with
// where each task was, or the caller's cancellation.
func waitEnded(ctx context.Context, ids []TaskID, last []Task, lastErr error) error {
	cause := context.Cause(ctx)
	if !errors.Is(cause, ErrWaitTimeout) {
		return cause
	}
	var where []string
	for i, id := range ids {
		if !last[i].Done() {
			st := last[i].TaskStatus
			if st == "" {
				st = "not seen yet"
			}
			where = append(where, fmt.Sprintf("task %s %s at %d%%", id, safetext.Escape(st), last[i].Progress))
		}
	}
	err := fmt.Errorf("%w: %s", ErrWaitTimeout, strings.Join(where, ", "))
	if lastErr != nil {
		err = fmt.Errorf("%w (last poll: %v)", err, lastErr)
	}
	return err
}
