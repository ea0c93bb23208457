package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"vmimport/jdcloud"
	"vmimport/upload"
)

// importOptions are the flags of the import into the cloud (ImportImage and
// the wait on its task), shared by a convert run (--import), `convert
// import` and `convert import-status`.
type importOptions struct {
	doImport     bool
	wait         bool
	waitTimeout  time.Duration
	apiEndpoint  string
	pollInterval time.Duration

	// api is the OpenAPI client, made before the upload starts so that a
	// missing region or refused credentials stop the run before a byte is
	// sent.
	api *jdcloud.Client
	// creds names where the API's credentials came from (never the secret).
	creds string
}

func (i *importOptions) register(fs *pflag.FlagSet, run bool) {
	if run {
		fs.BoolVar(&i.doImport, "import", false, "after the upload, import the object as a private image (ImportImage) and print the image and task ids")
		fs.BoolVar(&i.wait, "wait", false, "follow the import task until it ends (implies --import; a progress bar on a terminal); exit 0 when it finished, 5 when it failed")
	} else {
		fs.BoolVar(&i.wait, "wait", false, "follow the import task until it ends (a progress bar on a terminal); exit 0 when it finished, 5 when it failed")
	}
	i.registerAPI(fs)
}

// registerAPI adds the flags that say how to reach the API and wait.
func (i *importOptions) registerAPI(fs *pflag.FlagSet) {
	fs.DurationVar(&i.waitTimeout, "wait-timeout", 6*time.Hour, "with --wait: give up following the task after this long (exit 8; the import goes on in the cloud)")
	fs.StringVar(&i.apiEndpoint, "jdcloud-api-endpoint", jdcloud.DefaultEndpoint, "the cloud's OpenAPI endpoint for ImportImage and the image tasks (private deployments, tests)")
	fs.DurationVar(&i.pollInterval, "poll-interval", 5*time.Second, "shortest time between two polls of the task (it grows to 60s while nothing moves)")
	_ = fs.MarkHidden("poll-interval")
}

// enabled says whether a convert run imports what it uploaded.
func (i *importOptions) enabled() bool { return i.doImport || i.wait }

// validate checks the import flags of a convert run before anything is
// read: --import needs an upload.
func (i *importOptions) validate(o *convertOptions) error {
	if !i.enabled() {
		return nil
	}
	if !o.check.toBucket(o.output) && o.upload.bucket == "" {
		return usageError{errors.New("--import and --wait need an upload: give -o s3://BUCKET/KEY")}
	}
	if i.waitTimeout <= 0 {
		return usageError{fmt.Errorf("--wait-timeout %s: give a positive duration such as 6h", i.waitTimeout)}
	}
	if i.pollInterval <= 0 {
		return usageError{fmt.Errorf("--poll-interval %s: give a positive duration", i.pollInterval)}
	}
	return nil
}

// apiRegion is the region of the import: --jdcloud-region, else the one in
// a jdcloud-oss endpoint, else --region.
func apiRegion(u *uploadOptions, c *upload.Client) (string, error) {
	switch {
	case u.jdcloudRegion != "":
		return u.jdcloudRegion, nil
	case c != nil && c.JDCloudRegion != "":
		return c.JDCloudRegion, nil
	case u.region != "":
		return u.region, nil
	}
	return "", usageError{errors.New("the import needs the cloud's region: give --jdcloud-region (cn-north-1, ...) or --region")}
}

// apiCredentials is the chain of credentials for the OpenAPI: a separate
// pair in JDCLOUD_ACCESS_KEY_ID / JDCLOUD_SECRET_ACCESS_KEY, else the jdc
// CLI's current profile (~/.jdc/config), else the upload's AWS chain (the
// account's AccessKey pair is what both OSS and the OpenAPI take).
func apiCredentials(c *upload.Client) jdcloud.CredentialsProvider {
	jdc := ""
	if home, err := os.UserHomeDir(); err == nil {
		jdc = filepath.Join(home, ".jdc")
	}
	chain := []jdcloud.CredentialsProvider{jdcloud.EnvCredentials(nil), jdcloud.JDCConfigCredentials(jdc)}
	if c != nil {
		chain = append(chain, jdcloud.CredentialsFunc(func(ctx context.Context) (jdcloud.Credentials, error) {
			cr, err := c.Credentials(ctx)
			if err != nil {
				return jdcloud.Credentials{}, fmt.Errorf("%w: set %s and %s, or configure the jdc CLI (~/.jdc/config), or AWS credentials: %v",
					jdcloud.ErrNoCredentials, jdcloud.EnvAccessKeyID, jdcloud.EnvSecretAccessKey, err)
			}
			return jdcloud.Credentials{AccessKeyID: cr.AccessKeyID, SecretAccessKey: cr.SecretAccessKey, Source: "the AWS credential chain (as the upload)"}, nil
		}))
	}
	return jdcloud.ChainCredentials(chain...)
}

// connect makes the OpenAPI client for region and checks, with one cheap
// read (DescribeImageTasks of task 0), that the endpoint answers and takes
// the credentials: before an upload of hours, not after.
func (i *importOptions) connect(ctx context.Context, region string, c *upload.Client, logf func(string), preflight bool) error {
	creds := apiCredentials(c)
	cr, err := creds.Retrieve(ctx)
	if err != nil {
		if err == jdcloud.ErrNoCredentials {
			err = fmt.Errorf("%w: set %s and %s, or configure the jdc CLI (~/.jdc/config), or AWS credentials", err, jdcloud.EnvAccessKeyID, jdcloud.EnvSecretAccessKey)
		}
		return importError{err}
	}
	i.creds = cr.String()
	api, err := jdcloud.New(jdcloud.Config{
		Endpoint: i.apiEndpoint, Region: region, Credentials: creds, UserAgent: "vmimport-convert/" + version,
		Log: logf,
	})
	if err != nil {
		return usageError{err}
	}
	i.api = api
	if !preflight {
		return nil
	}
	_, err = api.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{"0"}})
	if errors.Is(err, jdcloud.ErrUnauthorized) || errors.Is(err, jdcloud.ErrNetwork) || errors.Is(err, jdcloud.ErrNoCredentials) {
		return importError{fmt.Errorf("checking the cloud's API at %s: %w%s", api.Endpoint(), err, i.credsHint(err))}
	}
	return nil
}

// credsHint tells which credentials were refused.
func (i *importOptions) credsHint(err error) string {
	if errors.Is(err, jdcloud.ErrUnauthorized) && i.creds != "" {
		return "; the credentials were " + i.creds
	}
	return ""
}

// importError carries the exit code of a failed import (see exitCodesHelp).
type importError struct{ error }

func (e importError) Unwrap() error { return e.error }

// ExitCode: 5 the task failed, 6 the API refused the request, 7 it refused
// the credentials (or there were none), 8 the wait timed out, 130
// interrupted, 1 network and server errors.
func (e importError) ExitCode() int {
	switch err := e.error; {
	case errors.Is(err, context.Canceled):
		return exitCancelled
	case errors.Is(err, jdcloud.ErrTaskFailed):
		return exitImportFailed
	case errors.Is(err, jdcloud.ErrWaitTimeout):
		return exitWaitTimeout
	case errors.Is(err, jdcloud.ErrUnauthorized), errors.Is(err, jdcloud.ErrNoCredentials):
		return exitCredentials
	case errors.Is(err, jdcloud.ErrInvalidRequest):
		return exitRefused
	}
	var ue usageError
	if errors.As(e.error, &ue) {
		return exitUsage
	}
	return exitFailure
}

// osHint warns when the import check could not tell the OS and no flag
// said it: the body then says linux / x86_64 / Other Linux.
func osHint(b upload.ImportImageBody) string {
	return fmt.Sprintf("the import check could not tell the operating system: importing as osType %s, architecture %s, platform %q; "+
		"give --os-type, --platform, --os-version and --architecture to say what it is", b.OSType, b.Architecture, b.Platform)
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
