package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"vmimport/check"
	"vmimport/reader"
	"vmimport/reader/image"
	"vmimport/reader/remote"
	"vmimport/stream"
)

// The types the CLI prints, as job hands them out: the CLI sees the job
// layer only.
type (
	// ImageInfo describes an image (format, sizes, backing chain, ...).
	ImageInfo = image.Info
	// CheckReport is the import check's findings.
	CheckReport = check.Report
	// Severity ranks a finding of the check.
	Severity = check.Severity
)

// Severities of the check's findings.
const (
	SeverityInfo    = check.Info
	SeverityWarning = check.Warning
	SeverityError   = check.Error
)

// MaxDiskGB is the largest system disk the cloud imports.
const MaxDiskGB = check.MaxDiskGB

// Inspection is what Inspect tells of a source: what `convert info`
// prints.
type Inspection struct {
	image.Info
	FileSize          int64 `json:"file_size"`
	AllocatedSize     int64 `json:"allocated_size"`
	SuggestedDiskSize int64 `json:"suggested_system_disk_size_gb"`
	Importable        bool  `json:"importable_size"`
	// VSphere is the VM and disk of a vsphere:// source.
	VSphere *VSphereInfo `json:"vsphere,omitempty"`
}

// source is a source opened for a look: Inspect, Check and Read.
type source struct {
	s       Spec
	clients *Clients
	opener  *remote.Opener
	im      reader.Image
	// vs is a vsphere:// source's session and snapshot (job/vsphere.go).
	vs   *vsphereSource
	warn func(string)
}

// openSource opens the source of spec (its Source, the reader settings and
// the remote ones; Output is not looked at) and checks its format is the
// one asserted. warn hears the readers' findings.
func openSource(ctx context.Context, spec Spec, warn func(string)) (*source, error) {
	spec.SplitSourceCredentials()
	if err := spec.validateSource(); err != nil {
		return nil, &SpecError{err}
	}
	clients := NewClients()
	ro, err := spec.RemoteOptions(warn, clients)
	if err != nil {
		return nil, &SpecError{err}
	}
	src := &source{s: spec, clients: clients, warn: warn}
	if spec.IsVSphere() {
		err = src.openVM(ctx, ro, warn)
	} else {
		src.opener = remote.New(ctx, ro)
		if src.im, err = reader.Open(spec.Source, reader.Options{
			AllowBacking: spec.AllowBacking, AllowPaths: spec.AllowPaths, Disk: spec.Disk, Warn: warn, Remote: src.opener,
		}); err != nil {
			err = &InputError{err}
		}
	}
	if err != nil {
		src.close()
		return nil, err
	}
	if err := CheckSourceFormat(spec.SourceFormat, src.im.Info()); err != nil {
		src.close()
		return nil, &InputError{err}
	}
	return src, nil
}

func (src *source) close() {
	if src.im != nil {
		src.im.Close()
	}
	if src.opener != nil {
		src.opener.Close()
	}
	src.clients.Close()
	if err := src.vs.close(context.Background()); err != nil && src.warn != nil {
		src.warn(err.Error()) // a snapshot left: never silently
	}
}

// validateSource checks the settings of the source alone.
func (s *Spec) validateSource() error {
	if s.Source == "" {
		return errors.New("no source image")
	}
	if s.Disk < 0 {
		return fmt.Errorf("--disk %d: disks count from 0", s.Disk)
	}
	if s.SourceFormat != "" && sourceFormat(s.SourceFormat) == "" {
		return fmt.Errorf("-f %s: not a format convert reads; use %s", s.SourceFormat, strings.Join(SourceFormats, ", "))
	}
	if err := s.VSphere.validate(s); err != nil {
		return err
	}
	return s.Remote.validate(s)
}

// Inspect describes the source of spec: its format and sizes, what a file
// takes on disk, the system disk size to ask for.
func Inspect(ctx context.Context, spec Spec, warn func(string)) (*Inspection, error) {
	src, err := openSource(ctx, spec, warn)
	if err != nil {
		return nil, err
	}
	defer src.close()
	im := src.im
	r := &Inspection{Info: im.Info(), SuggestedDiskSize: check.SuggestDiskGB(im.Size())}
	r.Importable = check.VirtualGB(im.Size()) <= check.MaxDiskGB
	if src.vs != nil {
		src.vsphereInspect(r)
	} else if fi, err := os.Stat(src.s.Source); err == nil && !src.s.IsRemote() {
		r.FileSize = fi.Size()
		r.AllocatedSize = fi.Size()
		if n, ok := allocatedBytes(src.s.Source, fi); ok && fi.Mode().IsRegular() {
			r.AllocatedSize = n
		}
		if fi.Mode()&os.ModeDevice != 0 {
			r.FileSize, r.AllocatedSize = im.Size(), im.Size()
		}
	} else if id, ok := src.opener.Pinned(src.s.Source); ok {
		r.FileSize, r.AllocatedSize = id.Size, id.Size // a remote file is all there
	}
	return r, nil
}

// CheckOptions shape Check.
type CheckOptions struct {
	// DiskSizeGB is the system disk size the import will ask for (0: the
	// smallest that fits).
	DiskSizeGB int64
	// Shrink checks for --shrink: a virtual size above DiskSizeGB passes
	// when everything beyond it is zero.
	Shrink bool
}

// Check runs the import check on the source of spec, as `convert check`
// does: the report, or an error when the check could not run.
func Check(ctx context.Context, spec Spec, o CheckOptions, warn func(string)) (*CheckReport, error) {
	src, err := openSource(ctx, spec, warn)
	if err != nil {
		if r, ok := vsphereCheck(ctx, spec, err); ok {
			return r, nil // the inventory tells why the disk cannot be read
		}
		return nil, err
	}
	defer src.close()
	r, err := check.Run(ctx, src.im, check.Options{Format: src.im.Info().Format, DiskSizeGB: o.DiskSizeGB, Shrink: o.Shrink})
	if err != nil {
		return nil, err
	}
	if src.vs != nil {
		src.vs.addFindings(r) // what vCenter's inventory says
	}
	if err := checkDigest(ctx, src.im, r); err != nil {
		return nil, err
	}
	return r, nil
}

// checkDigest checks the bytes of a source a recorded digest vouches for
// (the disk of an OVA, by its manifest), reading all of them, and adds the
// verdict to r: a conversion checks the same during its pass and would
// fail at its end. A source that cannot have a digest adds nothing.
func checkDigest(ctx context.Context, im image.Image, r *check.Report) error {
	digest, ok := image.DigestOf(im)
	switch {
	case !ok:
		return nil
	case digest == "":
		r.Add(check.Finding{Rule: check.RuleDigest, Severity: check.Info, Message: "the OVA's manifest does not list this disk (or there is none): its bytes were not verified"})
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- image.Verify(im) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		return ctx.Err() // closing the source stops the check
	}
	algo, _, _ := strings.Cut(digest, ":")
	switch {
	case err == nil:
		r.Add(check.Finding{Rule: check.RuleDigest, Severity: check.Info, Message: fmt.Sprintf("the disk's bytes match the %s digest of the OVA's manifest", algo)})
	case errors.Is(err, image.ErrCorrupt):
		r.Add(check.Finding{Rule: check.RuleDigest, Severity: check.Error, Message: fmt.Sprintf("%v; export the OVA again (a conversion of it fails at its end)", err)})
	default:
		return fmt.Errorf("checking the digest of the OVA's disk: %w", err)
	}
	return nil
}

// Read runs the pass over the source of spec alone, every block dropped
// (convert bench's read phase): what it read and how long it took.
func Read(ctx context.Context, spec Spec) (*Result, error) {
	spec = spec.withDefaults()
	src, err := openSource(ctx, spec, nil)
	if err != nil {
		return nil, err
	}
	defer src.close()
	res := &Result{Source: src.im.Info()}
	st, err := stream.Run(ctx, src.im, stream.SinkFunc(func(context.Context, *stream.Block) error { return nil }),
		stream.Options{Workers: spec.Workers, BlockSize: spec.BlockSize})
	res.Stats = st
	if errors.Is(err, stream.ErrOptions) {
		err = &SpecError{err}
	}
	return res, err
}

// BadInput tells an error of the source: unreadable, corrupt,
// unsupported, not allowed, or breaking an import rule.
func BadInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie) || errors.Is(err, image.ErrCorrupt) || errors.Is(err, image.ErrUnsupported) ||
		errors.Is(err, image.ErrNotAllowed) || errors.Is(err, check.ErrRule)
}

// BadSpec tells an error of the settings.
func BadSpec(err error) bool {
	var se *SpecError
	return errors.As(err, &se) || errors.Is(err, stream.ErrOptions)
}
