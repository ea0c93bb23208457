package upload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The object metadata (x-amz-meta-convert-*) an upload stores at
// CreateMultipartUpload, so that `convert import s3://B/K` can import the
// object later with no other input: what the import check found, the
// size to import as, the output format.
const (
	MetaVersion          = "convert-import-meta" // "1"
	MetaDiskFormat       = "convert-disk-format"
	MetaSystemDiskSizeGB = "convert-system-disk-size-gb"
	MetaOSType           = "convert-os-type"
	MetaPlatform         = "convert-platform"
	MetaOSVersion        = "convert-os-version"
	MetaArchitecture     = "convert-architecture"
	MetaVirtualSize      = "convert-virtual-size"
	MetaImageName        = "convert-image-name"
	MetaDescription      = "convert-description"
	MetaForceImport      = "convert-force-import"
)

// ErrNoImportMeta: the object carries no convert-import metadata (it was
// not uploaded by convert, or by an older one).
var ErrNoImportMeta = errors.New("the object carries no import metadata")

// ObjectMetadata is the metadata an upload of this image stores with the
// object. Values are ASCII: other bytes, and '%', are percent-encoded
// (user metadata travels in HTTP headers).
func (m ImportMeta) ObjectMetadata(virtualSize int64) map[string]string {
	md := map[string]string{MetaVersion: "1"}
	set := func(k, v string) {
		if v != "" {
			md[k] = metaEscape(v)
		}
	}
	set(MetaDiskFormat, m.DiskFormat)
	if m.SystemDiskSizeGB > 0 {
		set(MetaSystemDiskSizeGB, strconv.FormatInt(m.SystemDiskSizeGB, 10))
	}
	set(MetaOSType, m.OSType)
	set(MetaPlatform, m.Platform)
	set(MetaOSVersion, m.OSVersion)
	set(MetaArchitecture, m.Architecture)
	if virtualSize > 0 {
		set(MetaVirtualSize, strconv.FormatInt(virtualSize, 10))
	}
	set(MetaImageName, m.ImageName)
	set(MetaDescription, m.Description)
	if m.ForceImport {
		md[MetaForceImport] = "true"
	}
	return md
}

// ImportMetaFromObject reads ObjectMetadata back: the import fields and
// the virtual size (0 when not recorded).
func ImportMetaFromObject(md map[string]string) (ImportMeta, int64, error) {
	get := func(k string) string {
		for mk, v := range md { // stores may change the case of the keys
			if strings.EqualFold(mk, k) {
				if u, err := url.PathUnescape(v); err == nil {
					return u
				}
				return v
			}
		}
		return ""
	}
	if get(MetaVersion) == "" {
		return ImportMeta{}, 0, ErrNoImportMeta
	}
	m := ImportMeta{
		DiskFormat: get(MetaDiskFormat), OSType: get(MetaOSType), Platform: get(MetaPlatform), OSVersion: get(MetaOSVersion),
		Architecture: get(MetaArchitecture), ImageName: get(MetaImageName), Description: get(MetaDescription),
		ForceImport: get(MetaForceImport) == "true",
	}
	var err error
	if s := get(MetaSystemDiskSizeGB); s != "" {
		if m.SystemDiskSizeGB, err = strconv.ParseInt(s, 10, 64); err != nil || m.SystemDiskSizeGB <= 0 {
			return m, 0, fmt.Errorf("metadata %s=%q: not a size in GB", MetaSystemDiskSizeGB, s)
		}
	}
	var virtual int64
	if s := get(MetaVirtualSize); s != "" {
		if virtual, err = strconv.ParseInt(s, 10, 64); err != nil || virtual < 0 {
			return m, 0, fmt.Errorf("metadata %s=%q: not a size in bytes", MetaVirtualSize, s)
		}
	}
	return m, virtual, nil
}

// metaEscape percent-encodes what is not printable ASCII, and '%'.
func metaEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ObjectInfo is what HeadObject tells of an object.
type ObjectInfo struct {
	Bucket, Key string
	Size        int64
	ETag        string // lower case, without quotes
	Metadata    map[string]string
}

// HeadObject reads an object's size, ETag and metadata. Each failure is
// one line.
func (c *Client) HeadObject(ctx context.Context, bucket, key string) (*ObjectInfo, error) {
	if _, err := c.Credentials(ctx); err != nil {
		return nil, err
	}
	h, err := c.Bucket(bucket).Head(ctx, key)
	if err != nil {
		e := fail(fmt.Sprintf("s3://%s/%s at %s", bucket, key, c.Where()), key, 0, err).(*Error)
		switch httpStatus(err) {
		case http.StatusNotFound:
			e.Msg = fmt.Sprintf("s3://%s/%s: no such object at %s", bucket, key, c.Where())
		case http.StatusForbidden:
			e.Msg = fmt.Sprintf("s3://%s/%s at %s: access denied (check the credentials and the bucket policy)", bucket, key, c.Where())
		}
		return nil, e
	}
	return &ObjectInfo{Bucket: bucket, Key: key, Size: h.Size, ETag: h.ETag, Metadata: h.Metadata}, nil
}

// ObjectReport is the report of an object uploaded earlier: its URLs, a
// fresh presigned link valid for ttl, and the ImportImage request made
// from m, with the object's client token.
func (c *Client) ObjectReport(ctx context.Context, o *ObjectInfo, ttl time.Duration, m ImportMeta) *Report {
	r := &Report{Bucket: o.Bucket, Key: o.Key, Size: o.Size, ETag: o.ETag, Region: c.JDCloudRegion}
	c.describeObject(ctx, r, ttl, m)
	return r
}

// DefaultImageName is the image name an upload to key gets when none is
// given: the key's last element without its extension, cut to 32
// characters of [A-Za-z0-9_-].
func DefaultImageName(key string) string { return defaultImageName(key) }
