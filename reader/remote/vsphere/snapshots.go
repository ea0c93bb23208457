package vsphere

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// Left are the snapshots convert took that are still there (a run killed
// before it could remove them), by VM.
func Left(vms []*VM) map[*VM][]Snapshot {
	out := map[*VM][]Snapshot{}
	for _, vm := range vms {
		for _, s := range vm.Snapshots {
			if strings.HasPrefix(s.Name, SnapshotPrefix) {
				out[vm] = append(out[vm], s)
			}
		}
	}
	return out
}

// RemoveSnapshot removes one snapshot of the VM, consolidating its delta
// into the disk, and waits for it (under a fresh deadline of its own).
func (s *Session) RemoveSnapshot(ctx context.Context, vm *VM, snap Snapshot) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Minute)
	defer cancel()
	res, err := methods.RemoveSnapshot_Task(ctx, s.client, &types.RemoveSnapshot_Task{This: snap.ref, RemoveChildren: false, Consolidate: types.NewBool(true)})
	if err == nil {
		err = object.NewTask(s.client, res.Returnval).Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("%s: removing snapshot %q: %w", vm.URL, snap.Name, err)
	}
	return nil
}
