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

// The types of the vSphere inventory, as the CLI prints them.
type (
	// VSphereVM is what vCenter's inventory says of a VM.
	VSphereVM = vsphere.VM
	// VSphereDisk is one virtual disk of a VM.
	VSphereDisk = vsphere.Disk
	// VSphereSnapshot is one snapshot of a VM.
	VSphereSnapshot = vsphere.Snapshot
	// VSphereLogin says how to reach vCenter (convert vsphere ls and
	// snapshots).
	VSphereLogin = vsphere.Config
)

// VSphereSnapshotPrefix starts the name of every snapshot convert takes.
const VSphereSnapshotPrefix = vsphere.SnapshotPrefix

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

// VSphereLocation is what a vsphere:// URL names: the vCenter (HOST[:PORT],
// lower-cased), the user it names ("" for none), and the VM's (or
// folder's) inventory path, /DATACENTER/vm/FOLDER/.../NAME. It reads the
// URL as the login does.
func VSphereLocation(u string) (host, user, inventoryPath string, err error) {
	loc, err := vsphere.ParseURL(u)
	if err != nil {
		return "", "", "", err
	}
	return loc.Host, loc.User, loc.InventoryPath(), nil
}

// VSphereWithin reports whether the VM the vsphere:// URL u names lies
// under prefix: a vsphere:// URL of a vCenter, a datacenter or a folder of
// its VMs (the same host and port, the inventory path at or under the
// prefix's), both read as the login reads them.
func VSphereWithin(u, prefix string) bool { return vsphere.Within(u, prefix) }

// vsphereName is the source's name for keys and state: its canonical URL
// without the user.
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
		v.findings = append(v.findings, checkFinding(f))
	}
	return v, nil
}

func checkFinding(f vsphere.Finding) check.Finding {
	return check.Finding{Rule: f.Rule, Severity: check.Severity(f.Severity), Message: f.Message}
}

// freeze takes the snapshot (for a running VM) and maps the files to
// read, through an opener of ro's settings (its retries, its minimum
// rate) with the session's client and cookie.
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

// open opens the disk's top descriptor over the files, and through it
// the chain.
func (v *vsphereSource) open(s *Spec, warn func(string)) (reader.Image, error) {
	im, err := reader.Open(v.files.Top, reader.Options{AllowBacking: true, AllowPaths: s.AllowPaths, Warn: warn, Remote: v.files})
	if err != nil {
		return nil, &InputError{err}
	}
	return im, nil
}

// close removes the snapshot and logs out, once; the files' connections
// are closed with their opener.
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
		fs = append(fs, checkFinding(*f))
	}
	r.Add(fs...)
}

// The phases of a vsphere:// source, between open and shape:
//
//	open -> openVM -> checkInventory -> openDisk -> shape
//
// openVM logs in and reads the VM's inventory (no datastore read);
// checkInventory gives its findings to the import check, and a strict
// check refuses on their errors before a snapshot is taken or a byte of
// the datastore read; openDisk takes the snapshot of a running VM and
// opens the disk's chain on the datastore. The snapshot is removed once
// the pass has read everything (verifyDigests), or when the job ends
// otherwise (close), failure and interrupt included.

// openVM logs in to vCenter and reads the VM's inventory.
func (j *run) openVM(ctx context.Context) (phase, error) {
	v, err := openVSphere(ctx, &j.s, false)
	if err != nil {
		return nil, err
	}
	j.vs = v
	return j.checkInventory, nil
}

// checkInventory refuses, under a strict check, a VM whose inventory shows
// import errors (EFI firmware, an RDM or vSAN disk), before a snapshot is
// taken or a byte of the datastore is read; the findings are the check's
// verdict then. Otherwise they join the disk's check (importCheck).
func (j *run) checkInventory(context.Context) (phase, error) {
	s := &j.s
	if s.Check == "off" || s.Force || !j.strict() {
		return j.openDisk, nil
	}
	n := 0
	for _, f := range j.vs.findings {
		if f.Severity == check.Error {
			n++
		}
	}
	if n == 0 {
		return j.openDisk, nil
	}
	j.phase(Checking)
	r := check.NewSourceReport("vmdk", j.vs.findings)
	j.res.Check = r
	j.emit(Event{Kind: Checked, Check: r})
	return nil, &InputError{fmt.Errorf("%s: %w: vCenter's inventory shows %d import error(s) before a byte is read; fix them, or use --check warn or --force to go on anyway", s.shown(), check.ErrRule, n)}
}

// openDisk takes the snapshot of a running VM and opens the disk's chain
// on its datastore, through the job's opener (its counts are the job's).
func (j *run) openDisk(ctx context.Context) (phase, error) {
	s := &j.s
	ro, err := s.RemoteOptions(j.warn, j.clients)
	if err != nil {
		return nil, &SpecError{err}
	}
	if err := j.vs.freeze(ctx, ro, j.notice); err != nil {
		return nil, err
	}
	j.opener = j.vs.files.Opener()
	if j.im, err = j.vs.open(s, j.warn); err != nil {
		return nil, err
	}
	j.res.Remote.Source = j.vs.files.Identity()
	return j.checkOpened(ctx)
}

// releaseVM removes the snapshot and logs out; a snapshot that stays is a
// warning naming it (never left silently).
func (j *run) releaseVM(ctx context.Context) {
	if err := j.vs.close(ctx); err != nil {
		j.warn(err.Error())
	}
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
	clients := NewClients()
	defer clients.Close()
	ro, err := s.RemoteOptions(nil, clients)
	if err != nil {
		return upload.SourceID{}, err
	}
	files, err := v.src.Files(ctx, ro)
	if err != nil {
		return upload.SourceID{}, err
	}
	defer files.Opener().Close()
	im, err := reader.Open(files.Top, reader.Options{AllowBacking: true, AllowPaths: s.AllowPaths, Remote: files})
	if err != nil {
		return upload.SourceID{}, err
	}
	im.Close()
	return sourceID(files.Identity()), nil
}

// VSphereInfo is what Inspect tells of a vsphere:// source besides the
// image: the VM and the disk as the inventory has them.
type VSphereInfo struct {
	VM   *VSphereVM  `json:"vm"`
	Disk VSphereDisk `json:"disk"`
	// Snapshot names the snapshot the disk was read as of ("" without);
	// it is removed by the time Inspect returns.
	Snapshot string `json:"snapshot,omitempty"`
}

// openVMSource opens the disk of a vsphere:// spec for Inspect, Check and
// Read: the inventory, the snapshot of a running VM (with --snapshot),
// the disk's chain. notes hears what it does (a snapshot taken).
func (src *source) openVM(ctx context.Context, ro remote.Options, notes func(string)) error {
	s := &src.s
	v, err := openVSphere(ctx, s, false)
	if err != nil {
		return err
	}
	src.vs = v
	if err := v.freeze(ctx, ro, notes); err != nil {
		return err
	}
	src.opener = v.files.Opener()
	src.im, err = v.open(s, notes)
	return err
}

// vsphereInspect fills what Inspect tells of a vsphere:// source: its
// files as read, what they take on the datastore, the VM and the disk.
func (src *source) vsphereInspect(r *Inspection) {
	v := src.vs
	r.FileSize = v.files.Identity().Size
	r.AllocatedSize = r.FileSize
	if d := v.src.Disk; d.Allocated > 0 {
		r.AllocatedSize = d.Allocated
	}
	r.VSphere = &VSphereInfo{VM: v.src.VM, Disk: v.src.Disk}
	if snap := v.src.Snapshot(); snap != nil {
		r.VSphere.Snapshot = snap.Name
	}
}

// vsphereCheck is the check of a vsphere:// source whose disk could not
// be opened while its inventory shows why (an RDM or SEsparse disk, a vSAN
// or vVols datastore): the inventory's findings alone, as the verdict.
func vsphereCheck(ctx context.Context, spec Spec, openErr error) (*CheckReport, bool) {
	if !spec.IsVSphere() || errors.Is(openErr, vsphere.ErrRunning) || errors.Is(openErr, vsphere.ErrLogin) || ctx.Err() != nil {
		return nil, false
	}
	v, err := openVSphere(ctx, &spec, true)
	if err != nil {
		return nil, false
	}
	defer v.close(ctx)
	for _, f := range v.findings {
		if f.Severity == check.Error && (f.Rule == vsphere.RuleDiskKind || f.Rule == vsphere.RuleDatastore) {
			return check.NewSourceReport("vmdk", v.findings), true
		}
	}
	return nil, false
}

// VSphereList logs in and lists the VMs under the folder of a vsphere://
// URL (its subfolders too), as the inventory has them.
func VSphereList(ctx context.Context, login VSphereLogin) ([]*VSphereVM, error) {
	sess, err := vsphereLogin(ctx, login)
	if err != nil {
		return nil, err
	}
	defer sess.Logout(ctx)
	return sess.List(ctx)
}

// LeftSnapshot is a snapshot convert took and did not remove (a run killed
// hard), as VSphereSnapshots finds it.
type LeftSnapshot struct {
	VM       string          `json:"vm"`
	Snapshot VSphereSnapshot `json:"snapshot"`
	Removed  bool            `json:"removed,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// VSphereSnapshots finds the snapshots convert left on the VM a vsphere://
// URL names, or on the VMs under the folder it names; with remove, it
// removes them (an error of one is in its Error; the others go on).
func VSphereSnapshots(ctx context.Context, login VSphereLogin, remove bool) ([]LeftSnapshot, error) {
	sess, err := vsphereLogin(ctx, login)
	if err != nil {
		return nil, err
	}
	defer sess.Logout(ctx)
	var vms []*vsphere.VM
	if vm, err := sess.FindVM(ctx); err == nil {
		vms = []*vsphere.VM{vm}
	} else if vms, err = sess.List(ctx); err != nil {
		return nil, err
	}
	var list []LeftSnapshot
	for vm, snaps := range vsphere.Left(vms) {
		for _, s := range snaps {
			ls := LeftSnapshot{VM: vm.URL, Snapshot: s}
			if remove {
				if err := sess.RemoveSnapshot(ctx, vm, s); err != nil {
					ls.Error = err.Error()
				} else {
					ls.Removed = true
				}
			}
			list = append(list, ls)
		}
	}
	return list, nil
}

// vsphereLogin logs in; a URL that cannot be used is a SpecError.
func vsphereLogin(ctx context.Context, login VSphereLogin) (*vsphere.Session, error) {
	if login.Insecure && login.CAFile != "" {
		return nil, &SpecError{errors.New("--source-insecure skips the certificate check that --source-ca-file makes: give one")}
	}
	sess, err := vsphere.Login(ctx, login)
	if errors.Is(err, vsphere.ErrURL) {
		return nil, &SpecError{err}
	}
	return sess, err
}
