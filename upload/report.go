package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"vmimport/internal/units"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ImportMeta is what the ImportImage request needs besides the URL.
type ImportMeta struct {
	Architecture     string // x86_64, i386, arm64
	OSType           string // linux, windows
	Platform         string // CentOS, Ubuntu, Windows Server, Other Linux, Other Windows
	OSVersion        string
	DiskFormat       string // raw, qcow2, ...
	SystemDiskSizeGB int64
	ImageName        string
	Description      string
	// ForceImport asks the cloud to skip its own image checks: set when
	// --force carried the conversion past an import-rule error.
	ForceImport bool
}

// ImportImageBody is the JSON body of the target cloud's ImportImage call
// (POST /v1/regions/{regionId}/images:import).
type ImportImageBody struct {
	Architecture     string `json:"architecture"`
	OSType           string `json:"osType"`
	Platform         string `json:"platform,omitempty"`
	OSVersion        string `json:"osVersion,omitempty"`
	DiskFormat       string `json:"diskFormat"`
	SystemDiskSizeGB int64  `json:"systemDiskSizeGB"`
	ImageURL         string `json:"imageUrl"`
	ImageName        string `json:"imageName"`
	Description      string `json:"description,omitempty"`
	ForceImport      bool   `json:"forceImport,omitempty"`
	ClientToken      string `json:"clientToken"`
}

// Report is what an upload tells after it completed.
type Report struct {
	Bucket      string `json:"bucket"`
	Key         string `json:"key"`
	Endpoint    string `json:"endpoint,omitempty"`
	UploadID    string `json:"upload_id"`
	Size        int64  `json:"size"`
	ETag        string `json:"etag"`
	PartSize    int64  `json:"part_size"`
	Parts       int    `json:"parts"`
	PartsSent   int    `json:"parts_sent"`
	PartsCopied int    `json:"parts_copied"`
	PartsReused int    `json:"parts_reused"`
	BytesSent   int64  `json:"bytes_sent"`
	Verified    bool   `json:"verified"`
	// URL is the object's address on the internet endpoint.
	URL string `json:"url"`
	// IntranetURL is the same on the intranet host (s3 -> s3-internal).
	IntranetURL string `json:"intranet_url"`
	// PresignedURL is a GET link signed for the intranet host itself.
	PresignedURL   string    `json:"presigned_url,omitempty"`
	PresignExpires time.Time `json:"presign_expires,omitzero"`
	// Warnings: a presign made with temporary credentials, ...
	Warnings []string `json:"warnings,omitempty"`
	// Region is the target cloud's region for the import, if known.
	Region        string          `json:"region,omitempty"`
	ImportImage   ImportImageBody `json:"import_image"`
	ImportCommand string          `json:"import_command"`
}

// Report returns what the upload tells after Commit (nil before).
func (t *Target) Report() *Report { return t.report }

// Print writes the report for people; with hint, how to import the
// object too (the jdc command line and the API request), for an upload
// that was not imported.
func (r *Report) Print(w io.Writer, hint bool) {
	fmt.Fprintf(w, "uploaded s3://%s/%s: %d bytes in %d parts of %d MiB (%d sent, %d copied server-side, %d already there), %s sent",
		r.Bucket, r.Key, r.Size, r.Parts, r.PartSize>>20, r.PartsSent, r.PartsCopied, r.PartsReused, units.Bytes(r.BytesSent))
	if r.Verified {
		fmt.Fprint(w, ", read back and verified")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "object URL:    %s\n", r.URL)
	fmt.Fprintf(w, "intranet URL:  %s\n", r.IntranetURL)
	if r.PresignedURL != "" {
		fmt.Fprintf(w, "presigned URL (intranet, valid until %s):\n  %s\n", r.PresignExpires.Format(time.RFC3339), r.PresignedURL)
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	if !hint {
		return
	}
	fmt.Fprintf(w, "import it with:\n  %s\n", r.ImportCommand)
	// As the request sends it: presigned URLs keep their & (no HTML
	// escaping to \u0026).
	var body strings.Builder
	e := json.NewEncoder(&body)
	e.SetEscapeHTML(false)
	e.SetIndent("  ", "  ")
	e.Encode(r.ImportImage)
	b := strings.TrimSuffix(body.String(), "\n")
	region := r.Region
	if region == "" {
		region = "{regionId}"
	}
	fmt.Fprintf(w, "or POST https://vm.jdcloud-api.com/v1/regions/%s/images:import with\n  %s\n", region, b)
}

// objectURL is the address of bucket/key at base (path style or virtual
// hosted).
func objectURL(base *url.URL, pathStyle bool, bucket, key string) string {
	u := *base
	esc := (&url.URL{Path: "/" + key}).EscapedPath()
	if pathStyle {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + url.PathEscape(bucket)
		u.RawPath = ""
		return u.String() + esc
	}
	u.Host = bucket + "." + u.Host
	return strings.TrimSuffix(u.String(), "/") + esc
}

// intranet is base with its host s3.<region>... turned into
// s3-internal.<region>...; other hosts stay as they are.
func intranet(base *url.URL) *url.URL {
	u := *base
	if rest, ok := strings.CutPrefix(u.Host, "s3."); ok {
		u.Host = "s3-internal." + rest
	}
	return &u
}

func (t *Target) makeReport(ctx context.Context, etag string, verified bool) *Report {
	r := &Report{
		Bucket: t.bucket, Key: t.key, UploadID: t.uploadID, Size: t.g.pos, ETag: etag, PartSize: t.g.size,
		Parts: int(t.g.numParts()), BytesSent: t.parts.sent.Load(), Verified: verified, Region: t.c.JDCloudRegion,
	}
	for _, p := range t.parts.parts {
		switch p.how {
		case partSent:
			r.PartsSent++
		case partCopied:
			r.PartsCopied++
		case partReused:
			r.PartsReused++
		}
	}
	t.c.describeObject(ctx, r, t.o.PresignTTL, t.o.Import)
	return r
}

// ClientToken is the ImportImage clientToken of an object: derived from
// its bucket, key and ETag, so that importing the same object again (a
// re-run after a crash, `convert import`) gets the first import's image
// back instead of a second one, while new content under the same key gets
// a new image. 32 characters (the API takes up to 64).
func ClientToken(bucket, key, etag string) string {
	sum := sha256.Sum256([]byte(bucket + "/" + key + "/" + strings.ToLower(strings.Trim(etag, `"`))))
	return hex.EncodeToString(sum[:16])
}

// describeObject fills the links and the import request of a report whose
// Bucket, Key, ETag and Region are set.
func (c *Client) describeObject(ctx context.Context, r *Report, ttl time.Duration, m ImportMeta) {
	if ttl <= 0 {
		ttl = 7 * 24 * time.Hour
	}
	base := c.Endpoint
	if base == nil {
		base = &url.URL{Scheme: "https", Host: "s3." + c.Region + ".amazonaws.com"}
	} else {
		r.Endpoint = base.String()
	}
	in := intranet(base)
	r.URL = objectURL(base, c.PathStyle, r.Bucket, r.Key)
	r.IntranetURL = objectURL(in, c.PathStyle, r.Bucket, r.Key)

	presigner := s3.NewPresignClient(c.withEndpoint(in), s3.WithPresignExpires(ttl))
	signed := time.Now()
	req, err := presigner.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(r.Bucket), Key: aws.String(r.Key)})
	if err != nil {
		r.Warnings = append(r.Warnings, "could not presign a download link: "+short(err))
	} else {
		r.PresignedURL = req.URL
		r.PresignExpires = signed.Add(ttl).UTC().Truncate(time.Second)
		if cr, err := c.Credentials(ctx); err == nil && (cr.SessionToken != "" || cr.CanExpire) {
			msg := "the presigned URL was signed with temporary credentials (STS, SSO or an assumed role): it stops working when they expire"
			if cr.CanExpire && !cr.Expires.IsZero() {
				msg += fmt.Sprintf(" (at %s), not at %s", cr.Expires.UTC().Format(time.RFC3339), r.PresignExpires.Format(time.RFC3339))
				if cr.Expires.Before(r.PresignExpires) {
					r.PresignExpires = cr.Expires.UTC()
				}
			}
			r.Warnings = append(r.Warnings, msg+"; sign it with long-term keys for a slow import")
		}
	}
	imageURL := r.PresignedURL
	if imageURL == "" {
		imageURL = r.IntranetURL
	}
	name := m.ImageName
	if name == "" {
		name = defaultImageName(r.Key)
	}
	r.ImportImage = ImportImageBody{
		Architecture: orDefault(m.Architecture, "x86_64"), OSType: orDefault(m.OSType, "linux"), Platform: m.Platform,
		OSVersion: m.OSVersion, DiskFormat: orDefault(m.DiskFormat, "raw"), SystemDiskSizeGB: m.SystemDiskSizeGB,
		ImageURL: imageURL, ImageName: name, Description: m.Description, ForceImport: m.ForceImport,
		ClientToken: ClientToken(r.Bucket, r.Key, r.ETag),
	}
	if r.ImportImage.Platform == "" {
		if r.ImportImage.OSType == "windows" {
			r.ImportImage.Platform = "Other Windows"
		} else {
			r.ImportImage.Platform = "Other Linux"
		}
	}
	r.ImportCommand = importCommand(r.Region, r.ImportImage)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// defaultImageName makes an image name from the key's last element.
func defaultImageName(key string) string {
	name := key[strings.LastIndex(key, "/")+1:]
	if i := strings.IndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := b.String()
	if s == "" {
		s = "imported-image"
	}
	if len(s) > 32 {
		s = s[:32]
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// importCommand is the jdc command line that imports the image.
func importCommand(region string, b ImportImageBody) string {
	args := []string{"jdc", "vm", "import-image"}
	if region != "" {
		args = append(args, "--region-id", region)
	}
	args = append(args, "--architecture", b.Architecture, "--os-type", b.OSType, "--platform", b.Platform)
	if b.OSVersion != "" {
		args = append(args, "--os-version", b.OSVersion)
	}
	args = append(args, "--disk-format", b.DiskFormat, "--system-disk-size-gb", fmt.Sprint(b.SystemDiskSizeGB),
		"--image-url", b.ImageURL, "--image-name", b.ImageName)
	if b.Description != "" {
		args = append(args, "--description", b.Description)
	}
	if b.ForceImport {
		args = append(args, "--force-import", "true")
	}
	args = append(args, "--client-token", b.ClientToken)
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}
