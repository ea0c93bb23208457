package job

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"vmimport/check"
	"vmimport/jdcloud"
	"vmimport/upload"
)

// ImportMeta is what the ImportImage request needs besides the image's
// link: the disk format and size, the OS, the name.
type ImportMeta = upload.ImportMeta

// UploadReport is what an upload tells once complete: its URLs, the
// ImportImage request and command.
type UploadReport = upload.Report

// ObjectImport says which object `convert import` imports and how.
type ObjectImport struct {
	// Object is s3://BUCKET/KEY.
	Object string
	Store  Store
	Import ImportSpec
	// PresignTTL is how long the presigned link lives (24h..168h).
	PresignTTL time.Duration
	// Override changes the fields read from the object's metadata (the
	// flags the user gave); it may be nil.
	Override func(m *ImportMeta)
	// FieldsGiven says Override sets the disk format and the system disk
	// size: an object without convert's metadata may then be imported.
	FieldsGiven bool
	// ClientToken replaces the token derived from the object, if set.
	ClientToken string
}

// ImportObject imports an object uploaded earlier (`convert import`): it
// reads the import fields convert stored with it, applies the overrides,
// checks them, signs a fresh link and calls ImportImage, with Wait a wait
// on the task. The result is filled as far as the import got.
func ImportObject(ctx context.Context, o ObjectImport, h ImportHooks) (*ImportResult, error) {
	bucket, key, err := upload.ParseS3URL(o.Object)
	if err != nil {
		return nil, &SpecError{err}
	}
	if key == "" || strings.HasSuffix(key, "/") {
		return nil, &SpecError{fmt.Errorf("%s: give the object's key, not a folder", o.Object)}
	}
	if o.PresignTTL < 24*time.Hour || o.PresignTTL > 7*24*time.Hour {
		return nil, &SpecError{fmt.Errorf("--presign-ttl %s: the import link must live at least 1 day (24h) and SigV4 allows at most 7 days (168h)", o.PresignTTL)}
	}
	if len(o.ClientToken) > jdcloud.MaxClientToken {
		return nil, &SpecError{fmt.Errorf("--client-token: %d characters, at most %d", len(o.ClientToken), jdcloud.MaxClientToken)}
	}
	c, err := o.Store.Client(ctx, 4)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := APIRegion(o.Store, c); err != nil {
		return nil, err
	}
	info, err := c.HeadObject(ctx, bucket, key)
	if err != nil {
		return nil, err
	}
	object := "s3://" + bucket + "/" + key
	meta, virtual, err := upload.ImportMetaFromObject(info.Metadata)
	if errors.Is(err, upload.ErrNoImportMeta) {
		if !o.FieldsGiven {
			return nil, &SpecError{fmt.Errorf("%s carries no import metadata (convert did not upload it): give --disk-format and --system-disk-size-gb", object)}
		}
	} else if err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", object, err)}
	}
	if o.Override != nil {
		o.Override(&meta)
	}
	if err := checkImportMeta(meta, virtual); err != nil {
		return nil, &SpecError{err}
	}
	api, err := ConnectAPI(ctx, o.Store, c, o.Import, h.Notice, false)
	if err != nil {
		return nil, err
	}
	rep := c.ObjectReport(ctx, info, o.PresignTTL, meta)
	for _, w := range rep.Warnings {
		h.warn(w)
	}
	body := rep.ImportImage
	if o.ClientToken != "" {
		body.ClientToken = o.ClientToken
	}
	if meta.Platform == "" {
		h.warn(OSHint(body))
	}
	is := o.Import
	is.Enabled = true
	h.Store = o.Store
	return api.Import(ctx, body, object, is, h)
}

// checkImportMeta checks the fields the import sends against the API's
// rules, before the call.
func checkImportMeta(m ImportMeta, virtual int64) error {
	if !slices.Contains([]string{"raw", "qcow2", "vhd", "vmdk"}, m.DiskFormat) {
		return fmt.Errorf("disk format %q: the import takes raw, qcow2, vhd or vmdk (--disk-format)", m.DiskFormat)
	}
	if m.OSType != "" && m.OSType != "linux" && m.OSType != "windows" {
		return fmt.Errorf("--os-type %q: use linux or windows", m.OSType)
	}
	if m.Architecture != "" && !slices.Contains([]string{"x86_64", "arm64", "i386"}, m.Architecture) {
		return fmt.Errorf("--architecture %q: use x86_64, arm64 or i386", m.Architecture)
	}
	if virtual > 0 {
		if _, err := check.DiskSize(virtual, m.SystemDiskSizeGB); err != nil {
			return fmt.Errorf("system disk size: %w", err)
		}
	} else if g := m.SystemDiskSizeGB; g < check.MinDiskGB || g > check.MaxDiskGB || g%check.StepDiskGB != 0 {
		return fmt.Errorf("--system-disk-size-gb %d: use %d..%d, a multiple of %d", g, check.MinDiskGB, check.MaxDiskGB, check.StepDiskGB)
	}
	return nil
}

// ConnectStoreAPI makes the OpenAPI client for imports into the region of
// the store st names (convert import-status, a batch following imports),
// without a check; clients (nil: its own) give the store's client, whose
// credentials the API may take.
func ConnectStoreAPI(ctx context.Context, clients *Clients, st Store, is ImportSpec, log func(string)) (*API, error) {
	var c *upload.Client
	var err error
	if clients != nil {
		c, err = clients.Get(ctx, st.config())
	} else {
		c, err = st.Client(ctx, 1)
	}
	if err != nil {
		return nil, err
	}
	return ConnectAPI(ctx, st, c, is, log, false)
}
