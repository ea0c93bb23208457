package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"vmimport/job"
)

// uploadOptions are the flags of uploads to an object store.
type uploadOptions struct {
	endpoint      string
	region        string
	jdcloudRegion string
	pathStyle     bool
	profile       string
	concurrency   int
	partSize      string
	stateFile     string
	resume        bool
	verify        bool
	presignTTL    time.Duration
	bucket        string
	key           string

	imageName    string
	description  string
	osType       string
	osVersion    string
	architecture string
	platform     string
}

// register adds the upload's flags to fs, in two help groups: how to reach
// the store and shape the upload, and the fields of the import request.
func (u *uploadOptions) register(fs *pflag.FlagSet) {
	flagGroup(fs, groupUpload, func() { u.registerUpload(fs) })
	flagGroup(fs, groupImage, func() { u.registerImage(fs) })
}

func (u *uploadOptions) registerUpload(fs *pflag.FlagSet) {
	u.registerStore(fs)
	fs.Var(&destFlag{fs: fs, u: u, isKey: false}, "bucket", "upload to this bucket (with --key; same as -o s3://BUCKET/KEY)")
	fs.Var(&destFlag{fs: fs, u: u, isKey: true}, "key", "object key of the upload (with --bucket)")
	fs.IntVar(&u.concurrency, "upload-concurrency", 0, "parts uploaded in parallel, 1..64; memory holds this + 1 parts and an 8 MiB part 1 (default: 8, fewer for parts over 8 MiB, so that part buffers stay under 128 MiB)")
	fs.StringVar(&u.partSize, "part-size", "auto", "`size` of the upload parts (5M..5G; auto: from the virtual size, so that 10,000 parts suffice)")
	fs.StringVar(&u.stateFile, "state-file", "", "where the upload is recorded for --resume (default: one file per destination under the user's cache folder)")
	fs.BoolVar(&u.resume, "resume", false, "continue the interrupted upload recorded for this destination, and keep the upload (instead of aborting it) if this run fails")
	fs.BoolVar(&u.verify, "verify", false, "after the upload, read the object back and compare every part")
	fs.DurationVar(&u.presignTTL, "presign-ttl", 7*24*time.Hour, "validity of the presigned import URL (24h..168h)")
}

func (u *uploadOptions) registerImage(fs *pflag.FlagSet) {
	fs.StringVar(&u.imageName, "image-name", "", "image name for ImportImage (default: from the key)")
	fs.StringVar(&u.description, "description", "", "image description for ImportImage")
	fs.StringVar(&u.osType, "os-type", "", "ImportImage osType: linux or windows (default: what the import check finds, else linux)")
	fs.StringVar(&u.osVersion, "os-version", "", "ImportImage osVersion, e.g. 7.4 or 18.04 (default: what the import check finds)")
	fs.StringVar(&u.architecture, "architecture", "", "ImportImage architecture: x86_64, i386 or arm64 (default: what the import check finds, else x86_64)")
	fs.StringVar(&u.platform, "platform", "", `ImportImage platform: CentOS, Ubuntu, "Windows Server", "Other Linux", "Other Windows" (default: what the import check finds, else Other <os-type>)`)
}

// store is how to reach the store the flags name.
func (u *uploadOptions) store() job.Store {
	return job.Store{Endpoint: u.endpoint, Region: u.region, JDCloudRegion: u.jdcloudRegion, PathStyle: u.pathStyle, Profile: u.profile}
}

// spec fills the upload settings of s. The flags that shape an upload are
// refused for outputs that are not uploads.
func (u *uploadOptions) spec(fs *pflag.FlagSet, s *job.Spec, given func(*pflag.FlagSet, string) bool) error {
	if u.bucket != "" || u.key != "" {
		if u.bucket == "" || u.key == "" {
			return errors.New("--bucket and --key go together")
		}
		if want := fmt.Sprintf("s3://%s/%s", u.bucket, u.key); s.Output != want {
			return fmt.Errorf("-o %s and --bucket/--key %s disagree: give one of them", s.Output, want)
		}
	}
	if fs.Changed("upload-concurrency") && (u.concurrency < 1 || u.concurrency > 64) {
		return fmt.Errorf("--upload-concurrency %d: use 1..64", u.concurrency)
	}
	s.Upload = job.UploadSpec{
		Store: u.store(), Concurrency: u.concurrency, StateFile: u.stateFile, Resume: u.resume, Keep: u.resume,
		Verify: u.verify, PresignTTL: u.presignTTL,
		Image: job.ImageFields{
			Name: u.imageName, Description: u.description, OSType: u.osType, OSVersion: u.osVersion,
			Architecture: u.architecture, Platform: u.platform,
		},
	}
	if u.partSize != "auto" && u.partSize != "" {
		n, err := parseSize(u.partSize)
		if err != nil || n < job.MinPartSize || n > job.MaxPartSize {
			return fmt.Errorf("--part-size %s: use 5M..5G, or auto", u.partSize)
		}
		s.Upload.PartSize = n
	}
	if s.Kind() != job.ToBucket {
		for _, name := range []string{"upload-concurrency", "part-size", "state-file", "resume", "verify", "presign-ttl"} {
			if given(fs, name) {
				return fmt.Errorf("--%s applies to uploads (-o s3://BUCKET/KEY)", name)
			}
		}
		s.Upload = job.UploadSpec{}
	}
	return nil
}

// registerStore adds the flags that say how to reach the store; `convert
// uploads` shares them.
func (u *uploadOptions) registerStore(fs *pflag.FlagSet) {
	fs.StringVar(&u.endpoint, "endpoint", "", "S3 endpoint URL (default: --jdcloud-region's, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS)")
	fs.StringVar(&u.region, "region", "", "signing region (default: --jdcloud-region, else AWS_REGION or the profile's, else us-east-1)")
	fs.StringVar(&u.jdcloudRegion, "jdcloud-region", "", "target cloud region (cn-north-1, ...): sets the endpoint https://s3.REGION.jdcloud-oss.com and checks the bucket is there")
	fs.BoolVar(&u.pathStyle, "path-style", false, "address the bucket in the path, not the host name (always on for IP addresses and localhost)")
	fs.StringVar(&u.profile, "profile", "", "AWS shared config profile for credentials (default: AWS_PROFILE, else default)")
}

// destFlag is --bucket or --key: once both are given they set -o to
// s3://BUCKET/KEY, so the rest of the command line sees one output.
type destFlag struct {
	fs    *pflag.FlagSet
	u     *uploadOptions
	isKey bool
}

func (d *destFlag) String() string {
	if d.u == nil {
		return ""
	}
	if d.isKey {
		return d.u.key
	}
	return d.u.bucket
}

func (d *destFlag) Set(s string) error {
	if d.isKey {
		d.u.key = s
	} else {
		d.u.bucket = s
	}
	if d.u.bucket != "" && d.u.key != "" {
		if out := d.fs.Lookup("output"); out != nil {
			return out.Value.Set(fmt.Sprintf("s3://%s/%s", d.u.bucket, d.u.key))
		}
	}
	return nil
}

func (d *destFlag) Type() string { return "string" }
