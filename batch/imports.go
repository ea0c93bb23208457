package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"vmimport/jdcloud"
	"vmimport/job"
)

// follow waits for the import tasks the disks submitted, all together (one
// poll covers many tasks), grouped by the API that has them. A disk whose
// task failed fails; every such disk is then recorded and reported.
func (b *runner) follow(ctx context.Context) {
	b.pmu.Lock()
	waiting := b.waiting
	b.waiting = nil
	b.pmu.Unlock()
	type group struct {
		spec  *job.Spec
		disks []*awaited
	}
	groups := map[string]*group{}
	var order []string
	for _, a := range waiting {
		s := &b.items[a.i].Spec
		key := fmt.Sprintf("%+v|%s|%s", s.Upload.Store, a.res.Import.Region, a.res.Import.Endpoint)
		if groups[key] == nil {
			groups[key] = &group{spec: s}
			order = append(order, key)
		}
		groups[key].disks = append(groups[key].disks, a)
	}
	var eg errgroup.Group // each group ends on its own; none stops the others
	eg.SetLimit(8)
	for _, key := range order {
		g := groups[key]
		eg.Go(func() error {
			b.followGroup(ctx, g.spec, g.disks)
			return nil
		})
	}
	eg.Wait()
}

func (b *runner) followGroup(ctx context.Context, spec *job.Spec, disks []*awaited) {
	ids := make([]jdcloud.TaskID, len(disks))
	index := map[jdcloud.TaskID]*awaited{}
	for n, a := range disks {
		ids[n] = a.res.Import.TaskID
		index[ids[n]] = a
	}
	is := spec.Import
	api, err := job.ConnectStoreAPI(ctx, b.o.Clients, spec.Upload.Store, is, nil)
	var tasks []jdcloud.Task
	start := time.Now()
	if err == nil {
		wt, pi := is.WaitTimeout, is.PollInterval
		if wt == 0 {
			wt = job.DefaultWaitTimeout
		}
		if pi == 0 {
			pi = job.DefaultPollInterval
		}
		tasks, err = api.WaitTasks(ctx, ids, jdcloud.WaitOptions{
			Timeout: wt, MinInterval: pi, MaxInterval: max(60*time.Second, pi),
			Progress: func(t jdcloud.Task) {
				if a := index[t.TaskID]; a != nil {
					b.emit(Event{Kind: DiskEvent, Index: a.i, Item: &b.items[a.i], Job: job.Event{Kind: job.ImportProgress, Task: &t}})
				}
			},
		})
	}
	waited := time.Since(start).Seconds()
	for n, a := range disks {
		oc := &b.out[a.i]
		imp := a.res.Import
		imp.WaitSeconds = waited
		if n < len(tasks) && tasks[n].TaskID != "" {
			t := tasks[n]
			imp.Task, imp.Status = &t, t.TaskStatus
			if t.ImageID != "" {
				imp.ImageID = t.ImageID
			}
		}
		var terr *jdcloud.TaskError
		switch {
		case imp.Status == jdcloud.TaskFinished:
		case err != nil && errors.As(err, &terr) && imp.Status == jdcloud.TaskFailed:
			msg := imp.Task.ErrorInfo
			if msg == "" {
				msg = imp.Task.Message
			}
			oc.Status, oc.Error = Failed, fmt.Sprintf("import task %s failed: %s", imp.TaskID, msg)
			oc.Err = &job.ImportError{Err: fmt.Errorf("%w: %s", jdcloud.ErrTaskFailed, msg)}
		case ctx.Err() != nil:
			oc.Status, oc.Error = Cancelled, fmt.Sprintf("the batch was interrupted while waiting for import task %s (it goes on in the cloud)", imp.TaskID)
		case err != nil:
			oc.Status, oc.Error, oc.Err = Failed, fmt.Sprintf("import task %s: %v", imp.TaskID, err), err
		}
		if oc.Error != "" {
			imp.Error = oc.Error
		}
		oc.Import = imp
		a.book.record(context.WithoutCancel(ctx), oc, a.res)
		b.emit(Event{Kind: DiskDone, Index: a.i, Item: &b.items[a.i], Outcome: oc})
	}
}
