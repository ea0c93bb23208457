package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"vmimport/check"
	"vmimport/upload"
)

// finishCompleted ends a --resume whose recorded upload an earlier run
// completed before it was stopped (kill -9 between Complete and the
// cleanup): the object is there as recorded, so nothing is read or sent;
// the zero object and the state file are removed and the report printed.
func finishCompleted(ctx context.Context, ut *upload.Target, o *convertOptions, sum summary, stdout, stderr io.Writer) error {
	if err := ut.Commit(ctx, nil); err != nil {
		return fmt.Errorf("finishing the completed upload to %s: %w", o.output, err)
	}
	sum.OutputBytes = ut.Size()
	sum.SystemDiskSizeGB, _ = check.DiskSize(sum.Source.VirtualSize, o.diskSizeGB)
	sum.Target = ut.Report()
	if o.asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(sum)
	}
	fmt.Fprintf(stderr, "%s -> %s (%s): already uploaded by the run before, which stopped before its cleanup; cleaned up\n", sum.Source.Path, o.output, o.outFormat)
	ut.Print(stdout)
	return nil
}
