package job

import (
	"context"
	"fmt"
	"strings"

	"vmimport/check"
	"vmimport/reader"
	"vmimport/upload"
)

// importCheck runs the import readiness check before anything is written.
// It reports whether the ImportImage request must set forceImport: --force
// carried the run past errors, or the check was off and --force given.
func (j *run) importCheck(ctx context.Context, im reader.Image) (*check.Report, bool, error) {
	s := &j.s
	if s.Check == "off" {
		return nil, s.Force, nil
	}
	strict := j.strict()
	r, err := check.Run(ctx, im, check.Options{Format: im.Info().Format, DiskSizeGB: s.DiskSizeGB})
	if err != nil {
		return nil, false, fmt.Errorf("%s: import check: %w", s.shown(), err)
	}
	if j.vs != nil {
		j.vs.addFindings(r) // what vCenter's inventory says (job/vsphere.go)
	}
	j.res.Check = r
	j.emit(Event{Kind: Checked, Check: r})
	errs := r.Count(check.Error)
	switch {
	case errs == 0:
		return r, false, nil
	case s.Force:
		j.notice(fmt.Sprintf("check: going on despite %d error(s) because of --force; the import request will set forceImport", errs))
		return r, true, nil
	case strict:
		// The rules by name: a batch's line tells no more than this.
		return r, false, &InputError{fmt.Errorf("%s: %w: the import readiness check found %d error(s) (%s; convert check tells how to fix them); fix them, or use --check warn or --force to go on anyway",
			s.shown(), check.ErrRule, errs, strings.Join(r.Rules(check.Error), ", "))}
	}
	return r, false, nil
}

// fillImport completes the ImportImage fields from what the import check
// found, where the spec did not set them, and records forceImport.
func (j *run) fillImport(m *upload.ImportMeta, r *check.Report, forceImport bool) {
	if r != nil {
		f := r.ImportFields()
		for _, x := range []struct {
			dst *string
			val string
		}{
			{&m.Architecture, f.Architecture},
			{&m.OSType, f.OSType},
			{&m.Platform, f.Platform},
			{&m.OSVersion, f.OSVersion},
		} {
			if *x.dst == "" {
				*x.dst = x.val
			}
		}
	}
	m.ForceImport = forceImport
}
