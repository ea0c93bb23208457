package job

import (
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"time"

	"vmimport/upload"
	"vmimport/writer"
	"vmimport/writer/qcow2"
)

// Spec describes one disk, end to end: where it comes from, what it becomes,
// where it goes. It is plain data (it marshals to JSON), so that a batch can
// record it and a queue can carry it; Validate checks every field before any
// work starts. The zero value of a field means its default.
type Spec struct {
	// Source is the image to read: a file, a block device, or a URL
	// (https://, http://, s3://BUCKET/KEY) read in place by ranges.
	Source string `json:"source"`
	// Remote says how to read a URL source; see RemoteSpec.
	Remote RemoteSpec `json:"remote,omitzero"`
	// VSphere says how to read a vsphere:// source (job/vsphere.go).
	VSphere VSphereSpec `json:"vsphere,omitzero"`
	// AllowBacking permits reading through backing files and parents.
	AllowBacking bool `json:"allow_backing,omitempty"`
	// AllowPaths are folders backing files and extents may live in besides
	// the image's own.
	AllowPaths []string `json:"allow_paths,omitempty"`
	// Disk picks the disk of an OVA, from 0.
	Disk int `json:"disk,omitempty"`
	// SourceFormat, if set, is the format the source must have (qemu-img's
	// -f): the format is still told by the bytes, and a source of another
	// format is refused. qemu-img's "vpc" means vhd.
	SourceFormat string `json:"source_format,omitempty"`

	// Output is a file, "-" for Env.Stdout, or s3://BUCKET/KEY (a KEY
	// ending in / names the object after the source).
	Output string `json:"output"`
	// Format is "raw" or "qcow2"; the default is the one the output's
	// extension tells (.raw and .img RAW, .qcow2 QCOW2), else qcow2 for
	// uploads (only the data crosses the link, the server copies nothing,
	// the cloud imports it as is) and raw otherwise. A Format the
	// extension contradicts is refused.
	Format string `json:"output_format,omitempty"`
	// QCOW2 shapes QCOW2 output; it must stay zero for RAW.
	QCOW2 QCOW2Spec `json:"qcow2,omitzero"`

	// DiskSizeGB is the system disk size to import as (0: the smallest
	// that fits).
	DiskSizeGB int64 `json:"system_disk_size_gb,omitempty"`
	// Force goes on despite a broken import rule.
	Force bool `json:"force,omitempty"`
	// Shrink lets a larger virtual disk through when everything beyond
	// DiskSizeGB is zero.
	Shrink bool `json:"shrink,omitempty"`
	// Check is the import check mode: auto (default: strict for buckets,
	// warn otherwise), strict, warn or off.
	Check string `json:"check,omitempty"`

	// Workers read and decode blocks in parallel (default GOMAXPROCS).
	Workers int `json:"workers,omitempty"`
	// BlockSize is the unit of reading and zero detection (default 1 MiB).
	BlockSize int `json:"block_size,omitempty"`

	// Upload applies when Output is s3://.
	Upload UploadSpec `json:"upload,omitzero"`
	// Import carries an upload on to a private image.
	Import ImportSpec `json:"import,omitzero"`

	// Rehearse runs the whole pass and then aborts the target instead of
	// committing it: nothing is kept (convert bench).
	Rehearse bool `json:"rehearse,omitempty"`
	// DryRun does everything up to the pass and writes nothing: opens
	// and sizes the source, checks the store (credentials, the bucket, a
	// test upload that is aborted), the import API and the import rules,
	// and plans the output (Result.Plan). It is the runner's choice, never
	// carried with a disk (--dry-run).
	DryRun bool `json:"-"`
}

// QCOW2Spec shapes QCOW2 output.
type QCOW2Spec struct {
	Compat      string `json:"compat,omitempty"`       // "1.1" (default) or "0.10"
	ClusterSize int    `json:"cluster_size,omitempty"` // default 64 KiB
	// Compress is when to compress clusters: "auto" (while the upload is
	// the bottleneck; the default for uploads), "always" or "never" (the
	// default for other outputs, unless Compression is set: then always,
	// as before there was a choice).
	Compress string `json:"compress,omitempty"`
	// Compression is the algorithm: "zlib" (any qemu; the default) or
	// "zstd" (qemu 5.1+, compat 1.1).
	Compression string `json:"compression,omitempty"`
}

// Store says how to reach an S3-compatible object store. Credentials come
// from the environment of whoever runs the job, never from the spec.
type Store struct {
	Endpoint      string `json:"endpoint,omitempty"`
	Region        string `json:"region,omitempty"`
	JDCloudRegion string `json:"jdcloud_region,omitempty"`
	PathStyle     bool   `json:"path_style,omitempty"`
	Profile       string `json:"profile,omitempty"`
}

// UploadSpec shapes an upload.
type UploadSpec struct {
	Store
	// Concurrency is the number of parts in flight (default 8).
	Concurrency int `json:"concurrency,omitempty"`
	// PartSize is the part size (0: planned from the output's size).
	PartSize int64 `json:"part_size,omitempty"`
	// StateFile records the upload for a resume (default: one per
	// destination under the user's cache folder).
	StateFile string `json:"state_file,omitempty"`
	// Resume continues the upload recorded for this destination.
	Resume bool `json:"resume,omitempty"`
	// ResumeImplied: the runner (a batch), not the user, asked for
	// Resume: a first run is not told that nothing was recorded.
	ResumeImplied bool `json:"-"`
	// Keep keeps the upload for a later resume when the run fails,
	// instead of aborting it.
	Keep bool `json:"keep,omitempty"`
	// Verify reads the object back after Complete.
	Verify bool `json:"verify,omitempty"`
	// PresignTTL is how long the presigned import link lives (default 7
	// days; 24h..168h).
	PresignTTL time.Duration `json:"presign_ttl,omitempty"`
	// Image fills the ImportImage request; empty fields come from the
	// import check, else from defaults.
	Image ImageFields `json:"image,omitzero"`
}

// ImageFields are the ImportImage fields a user may set.
type ImageFields struct {
	Name         string `json:"name,omitempty"`
	Description  string `json:"description,omitempty"`
	OSType       string `json:"os_type,omitempty"`      // linux, windows
	OSVersion    string `json:"os_version,omitempty"`   // 7.4, 18.04, ...
	Architecture string `json:"architecture,omitempty"` // x86_64, i386, arm64
	Platform     string `json:"platform,omitempty"`     // CentOS, Ubuntu, ...
}

// Kind is where the output goes.
type Kind int

// Output kinds.
const (
	ToFile Kind = iota
	ToStdout
	ToBucket
)

// Kind tells where the output goes.
func (s *Spec) Kind() Kind {
	switch {
	case s.Output == "-":
		return ToStdout
	case strings.HasPrefix(s.Output, "s3://"):
		return ToBucket
	}
	return ToFile
}

// Defaults used when a field is zero.
const (
	DefaultBlockSize         = 1 << 20
	DefaultUploadConcurrency = 8
	DefaultPresignTTL        = 7 * 24 * time.Hour
)

// OutputFormat is the output's format: Format, or the one the output's
// extension tells, or the default for the kind of output.
func (s *Spec) OutputFormat() string {
	switch {
	case s.Format != "":
		return s.Format
	case s.extensionFormat() != "":
		return s.extensionFormat()
	case s.Kind() == ToBucket:
		return "qcow2"
	}
	return "raw"
}

// compressMode is QCOW2.Compress with its default.
func (s *Spec) compressMode() string {
	switch {
	case s.QCOW2.Compress != "":
		return s.QCOW2.Compress
	case s.Kind() == ToBucket:
		return CompressAuto
	case s.QCOW2.Compression != "":
		return CompressAlways
	}
	return CompressNever
}

// withDefaults returns s with zero fields set to their defaults.
func (s Spec) withDefaults() Spec {
	s.Format = s.OutputFormat()
	if s.Format == "qcow2" {
		s.QCOW2.Compress = s.compressMode()
		switch {
		case s.QCOW2.Compress == CompressNever || s.QCOW2.Compress == CompressAuto && s.Kind() != ToBucket:
			s.QCOW2.Compression = ""
		case s.QCOW2.Compression == "":
			s.QCOW2.Compression = qcow2.CompressZlib
		}
	}
	if s.Check == "" {
		s.Check = "auto"
	}
	if s.Workers == 0 {
		s.Workers = runtime.GOMAXPROCS(0)
		if s.IsRemote() {
			s.Workers = max(s.Workers, DefaultRemoteWorkers)
		}
	}
	if s.BlockSize == 0 {
		s.BlockSize = DefaultBlockSize
	}
	if s.Kind() == ToBucket {
		if s.Upload.Concurrency == 0 {
			s.Upload.Concurrency = DefaultUploadConcurrency
		}
		if s.Upload.PresignTTL == 0 {
			s.Upload.PresignTTL = DefaultPresignTTL
		}
		s.Import = s.Import.withDefaults()
	}
	if s.Format == "qcow2" {
		// The QCOW2 encoder takes whole clusters: blocks are at least one.
		cs := s.QCOW2.ClusterSize
		if cs == 0 {
			cs = qcow2.DefaultClusterSize
		}
		s.BlockSize = qcow2.BlockSize(s.BlockSize, cs)
	}
	return s
}

// Validate checks every field that can be checked without opening the
// source or reaching a store: ranges, names, combinations. Run calls it
// first; a caller with many specs (a batch) calls it on all of them before
// it starts any. The error is a *SpecError naming the setting by its
// command-line flag.
func (s *Spec) Validate() error {
	if err := s.validate(); err != nil {
		return &SpecError{err}
	}
	return nil
}

func (s *Spec) validate() error {
	if s.Source == "" {
		return errors.New("no source image")
	}
	if s.Output == "" {
		return errors.New("no output: give -o FILE, -o - for stdout, or -o s3://BUCKET/KEY")
	}
	if s.Disk < 0 {
		return fmt.Errorf("--disk %d: disks count from 0", s.Disk)
	}
	if err := s.Remote.validate(s); err != nil {
		return err
	}
	if err := s.VSphere.validate(s); err != nil {
		return err
	}
	if s.SourceFormat != "" && sourceFormat(s.SourceFormat) == "" {
		return fmt.Errorf("-f %s: not a format convert reads; use %s", s.SourceFormat, strings.Join(SourceFormats, ", "))
	}
	switch s.OutputFormat() {
	case "raw":
		if s.QCOW2 != (QCOW2Spec{}) {
			return errors.New("--qcow2-compat, --cluster-size, --compress and --compression apply to -O qcow2")
		}
	case "qcow2":
		switch s.QCOW2.Compress {
		case "", CompressAuto, CompressAlways, CompressNever:
		default:
			return fmt.Errorf("--compress %q: use auto, always or never", s.QCOW2.Compress)
		}
		if s.Kind() == ToStdout {
			return fmt.Errorf("-O qcow2 -o -: %w; or use -O raw for pipes", writer.ErrHeadOnStream)
		}
		if _, err := s.qcow2Options(0); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-O %s: output format not supported (use raw or qcow2)", s.Format)
	}
	if err := s.checkExtension(); err != nil {
		return err
	}
	switch s.Check {
	case "", "auto", "strict", "warn", "off":
	default:
		return fmt.Errorf("--check %q: use auto, strict, warn or off", s.Check)
	}
	if s.DiskSizeGB < 0 {
		return fmt.Errorf("--system-disk-size-gb %d: negative", s.DiskSizeGB)
	}
	if s.Shrink && s.DiskSizeGB == 0 {
		return errors.New("--shrink needs --system-disk-size-gb")
	}
	if s.Workers < 0 || s.Workers > 256 {
		return fmt.Errorf("--workers %d: use 1..256", s.Workers)
	}
	if bs := s.BlockSize; bs != 0 && (bs < 4<<10 || bs > 64<<20 || bs&(bs-1) != 0) {
		return fmt.Errorf("--block-size %d: use a power of two from 4k to 64M", bs)
	}
	if err := s.Import.validate(); err != nil {
		return err
	}
	if (s.Import.Enabled || s.Import.Wait) && (s.Kind() != ToBucket || s.Rehearse) {
		return errors.New("--import and --wait need an upload: give -o s3://BUCKET/KEY")
	}
	if s.Kind() == ToBucket {
		return s.Upload.validate(s.Output)
	}
	if s.Upload != (UploadSpec{Store: s.Upload.Store, Image: s.Upload.Image}) {
		return errors.New("the upload settings (--resume, --verify, --part-size, ...) apply to -o s3://BUCKET/KEY")
	}
	return nil
}

func (u *UploadSpec) validate(output string) error {
	if _, _, err := upload.ParseS3URL(output); err != nil {
		return err
	}
	if ttl := u.PresignTTL; ttl != 0 && (ttl < 24*time.Hour || ttl > 7*24*time.Hour) {
		return fmt.Errorf("--presign-ttl %s: the import link must live at least 1 day (24h) and SigV4 allows at most 7 days (168h)", ttl)
	}
	if u.Endpoint != "" && !isHTTPURL(u.Endpoint) {
		return fmt.Errorf("--endpoint %q: give a URL such as https://s3.cn-north-1.jdcloud-oss.com", u.Endpoint)
	}
	if c := u.Concurrency; c < 0 || c > 64 {
		return fmt.Errorf("--upload-concurrency %d: use 1..64", c)
	}
	if p := u.PartSize; p != 0 && (p < upload.MinPartSize || p > upload.MaxPartSize) {
		return fmt.Errorf("--part-size %d: use 5M..5G", p)
	}
	if u.Keep && !u.Resume {
		return errors.New("keeping a failed upload needs --resume")
	}
	switch u.Image.OSType {
	case "", "linux", "windows":
	default:
		return fmt.Errorf("--os-type %q: use linux or windows", u.Image.OSType)
	}
	switch u.Image.Architecture {
	case "", "x86_64", "i386", "arm64":
	default:
		return fmt.Errorf("--architecture %q: use x86_64, i386 or arm64", u.Image.Architecture)
	}
	return nil
}

// isHTTPURL tells an http or https URL with a host, as the endpoints are.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// qcow2Options returns the encoder options for a virtual size, checked.
func (s *Spec) qcow2Options(virtual int64) (qcow2.Options, error) {
	o, err := qcow2.Options{
		Compat: s.QCOW2.Compat, ClusterSize: s.QCOW2.ClusterSize, Compression: s.QCOW2.Compression, VirtualSize: virtual,
	}.Validate()
	if err != nil {
		// "qcow2: invalid options: compat ..." in the user's words.
		return o, fmt.Errorf("-O qcow2: %s", strings.TrimPrefix(err.Error(), qcow2.ErrOptions.Error()+": "))
	}
	return o, nil
}
