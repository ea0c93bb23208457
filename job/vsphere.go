package job

import (
	"context"
	"errors"
	"fmt"

	"vmimport/check"
	"vmimport/reader"
	"vmimport/reader/remote"
	"vmimport/reader/remote/vsphere"
	"vmimport/upload"
)

// VSphereSpec says how to read a vsphere:// source: a VM's disk, read on
// its datastore through vCenter.
type VSphereSpec struct {
	// Snapshot reads a running VM as of a snapshot taken for the read and
	// removed after it; without it a running VM is refused.
	Snapshot bool `json:"snapshot,omitempty"`
	// Insecure skips the verification of vCenter's certificate; CAFile
	// is a PEM bundle of the authorities that signed it.
	Insecure bool   `json:"insecure,omitempty"`
	CAFile   string `json:"ca_file,omitempty"`
	// Password is the vCenter account's password, read from a file by
	// the caller. It is a secret: never marshalled (a spec written down or
	// sent to another node carries none; whoever runs it there gives
	// VSPHERE_PASSWORD) and never printed. Empty: VSPHERE_PASSWORD.
	Password string `json:"-"`
}

// IsVSphere reports whether the source is a vsphere:// VM.
func (s *Spec) IsVSphere() bool { return vsphere.IsURL(s.Source) }

// vsphereFlags are the settings of vsphere:// sources, for messages.
const vsphereFlags = "--snapshot, --source-insecure, --source-ca-file and --source-password-file"

func (v *VSphereSpec) validate(s *Spec) error {
	if !s.IsVSphere() {
		if *v != (VSphereSpec{}) {
			return errors.New(vsphereFlags + " apply to vsphere:// sources")
		}
		return nil
	}
	loc, err := vsphere.ParseURL(s.Source)
	if err != nil {
		return err
	}
	if loc.Path == "" {
		return fmt.Errorf("%s names a folder: give a VM, vsphere://HOST/%s/vm/FOLDER/VM (convert vsphere ls lists them)", vsphere.Redact(s.Source), loc.Datacenter)
	}
	if len(s.Remote.Headers) > 0 || s.Remote.Store != (Store{}) {
		return errors.New("--source-header and the --source-endpoint flags apply to https:// and s3:// sources; a vsphere:// source is read with its vCenter session")
	}
	if v.Insecure && v.CAFile != "" {
		return errors.New("--source-insecure skips the certificate check that --source-ca-file makes: give one")
	}
	return nil
}

func (v *VSphereSpec) config(s *Spec) vsphere.Config {
	return vsphere.Config{URL: s.Source, Password: v.Password, Insecure: v.Insecure, CAFile: v.CAFile, Disk: s.Disk, Snapshot: v.Snapshot}
}

// vsphereName is the source's name for keys and state: its canonical URL
// without the user, and the disk.
func vsphereName(s *Spec) string {
	loc, err := vsphere.ParseURL(s.Source)
	if err != nil {
		return vsphere.Redact(s.Source)
	}
	return loc.String()
}

// vsphereSource is a vsphere:// source being read.
type vsphereSource struct {
	src      *vsphere.Source
	files    *vsphere.Files
	findings []check.Finding
	closed   bool
}

// openVSphere logs in and reads the inventory: nothing is changed, no
// byte of the disk is read.
func openVSphere(ctx context.Context, s *Spec, identify bool) (*vsphereSource, error) {
	src, err := vsphere.Open(ctx, s.VSphere.config(s), identify)
	if err != nil {
		if errors.Is(err, vsphere.ErrURL) {
			return nil, &SpecError{err}
		}
		return nil, &InputError{err}
	}
	v := &vsphereSource{src: src}
	for _, f := range src.Findings {
		v.findings = append(v.findings, check.Finding{Rule: f.Rule, Severity: check.Severity(f.Severity), Message: f.Message})
	}
	return v, nil
}

// freeze takes the snapshot (for a running VM) and maps the files to
// read.
func (v *vsphereSource) freeze(ctx context.Context, ro remote.Options, note func(string)) error {
	if err := v.src.Freeze(ctx, note); err != nil {
		return &InputError{err}
	}
	files, err := v.src.Files(ctx, ro)
	if err != nil {
		return &InputError{err}
	}
	v.files = files
	return nil
}

// close removes the snapshot and logs out, once.
func (v *vsphereSource) close(ctx context.Context) error {
	if v == nil || v.closed {
		return nil
	}
	v.closed = true
	return v.src.Close(ctx)
}

// addFindings puts the inventory's findings into the check's report, with
// the cross-check of the guest OS vCenter names against the disk's.
func (v *vsphereSource) addFindings(r *check.Report) {
	fs := v.findings
	if f := v.src.VM.CrossCheck(r.OS.OSType); f != nil {
		fs = append(fs, check.Finding{Rule: f.Rule, Severity: check.Severity(f.Severity), Message: f.Message})
	}
	r.Add(fs...)
}

// openVSphere is the job's opening of a vsphere:// source: the inventory's
// findings are the import check's, and with a strict check their errors
// (EFI firmware, an RDM or vSAN disk) refuse the source before a byte is
// read and before a snapshot is taken; then the snapshot, if the VM runs.
func (j *run) openVSphere(ctx context.Context, ro remote.Options) (*vsphereSource, error) {
	s := &j.s
	v, err := openVSphere(ctx, s, false)
	if err != nil {
		return nil, err
	}
	if s.Check != "off" && !s.Force && j.strict() {
		if n := countErrors(v.findings); n > 0 {
			r := check.NewSourceReport("vmdk", v.findings)
			j.res.Check = r
			j.emit(Event{Kind: Checked, Check: r})
			v.close(ctx)
			return nil, &InputError{fmt.Errorf("%s: %w: vCenter's inventory shows %d import error(s) before a byte is read; fix them, or use --check warn or --force to go on anyway", s.shown(), check.ErrRule, n)}
		}
	}
	if err := v.freeze(ctx, ro, j.notice); err != nil {
		j.closeVSphere(ctx, v)
		return nil, err
	}
	return v, nil
}

// closeVSphere removes the snapshot and logs out; a snapshot that stays
// is a warning naming it (never left silently).
func (j *run) closeVSphere(ctx context.Context, v *vsphereSource) {
	if err := v.close(ctx); err != nil {
		j.warn(err.Error())
	}
}

func countErrors(fs []check.Finding) int {
	n := 0
	for _, f := range fs {
		if f.Severity == check.Error {
			n++
		}
	}
	return n
}

// strict reports whether the import check's errors stop the job.
func (j *run) strict() bool {
	s := &j.s
	return s.Check == "strict" || (s.Check == "auto" && s.Kind() == ToBucket)
}

// identifyVSphere identifies disk s.Disk of the VM as it is now: its
// files' URLs, sizes and versions (the descriptors and headers are read,
// not the data). A running VM is not snapshotted for this: its files
// change, so a batch redoes it.
func identifyVSphere(ctx context.Context, s *Spec) (upload.SourceID, error) {
	v, err := openVSphere(ctx, s, true)
	if err != nil {
		return upload.SourceID{}, err
	}
	defer v.close(ctx)
	files, err := v.src.Files(ctx, remote.Options{Retries: s.Remote.Retries})
	if err != nil {
		return upload.SourceID{}, err
	}
	im, err := reader.Open(files.Top, reader.Options{AllowBacking: true, AllowPaths: s.AllowPaths, Remote: files})
	if err != nil {
		return upload.SourceID{}, err
	}
	im.Close()
	return sourceID(files.Identity()), nil
}

// VSphereImage is a vsphere:// source opened for convert info and
// convert check: the disk, what the inventory says, and what reading it
// cost. Close removes the snapshot (if one was taken) and logs out.
type VSphereImage struct {
	reader.Image
	VM   *vsphere.VM
	Disk vsphere.Disk
	// Snapshot names the snapshot the disk is read as of ("" without).
	Snapshot string
	v        *vsphereSource
}

// OpenVSphere opens the disk of a vsphere:// spec for info and check;
// notes hears what it does (a snapshot taken).
func OpenVSphere(ctx context.Context, s Spec, notes func(string)) (*VSphereImage, error) {
	if err := s.VSphere.validate(&s); err != nil {
		return nil, &SpecError{err}
	}
	v, err := openVSphere(ctx, &s, false)
	if err != nil {
		return nil, err
	}
	o, err := s.RemoteOptions(notes)
	if err != nil {
		v.close(ctx)
		return nil, err
	}
	if err := v.freeze(ctx, o, notes); err != nil {
		if cerr := v.close(ctx); cerr != nil && notes != nil {
			notes(cerr.Error())
		}
		return nil, err
	}
	im, err := reader.Open(v.files.Top, reader.Options{AllowBacking: true, AllowPaths: s.AllowPaths, Warn: notes, Remote: v.files})
	if err != nil {
		if cerr := v.close(ctx); cerr != nil && notes != nil {
			notes(cerr.Error())
		}
		return nil, &InputError{err}
	}
	vi := &VSphereImage{Image: im, VM: v.src.VM, Disk: v.src.Disk, v: v}
	if snap := v.src.Snapshot(); snap != nil {
		vi.Snapshot = snap.Name
	}
	return vi, nil
}

// AddFindings puts the inventory's findings into a check's report.
func (vi *VSphereImage) AddFindings(r *check.Report) { vi.v.addFindings(r) }

// Fetched counts the requests and bytes of the reads so far.
func (vi *VSphereImage) Fetched() remote.Stats { return vi.v.files.Stats() }

// Identity is the version of the disk's files that were read.
func (vi *VSphereImage) Identity() remote.Identity { return vi.v.files.Identity() }

// Unwrap is the image read.
func (vi *VSphereImage) Unwrap() reader.Image { return vi.Image }

// Close closes the image, removes the snapshot and logs out.
func (vi *VSphereImage) Close() error {
	err := vi.Image.Close()
	if cerr := vi.v.close(context.Background()); cerr != nil {
		err = cerr
	}
	return err
}
