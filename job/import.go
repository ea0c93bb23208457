package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"vmimport/jdcloud"
	"vmimport/upload"
)

// ImportSpec carries an upload on to a private image: ImportImage after
// Complete, and with Wait a wait on the import task.
type ImportSpec struct {
	// Enabled calls ImportImage after the upload.
	Enabled bool `json:"enabled,omitempty"`
	// Wait follows the import task to its end (it implies Enabled).
	Wait bool `json:"wait,omitempty"`
	// WaitTimeout ends the wait (default 6h; the import goes on).
	WaitTimeout time.Duration `json:"wait_timeout,omitempty"`
	// APIEndpoint is the cloud's OpenAPI (default jdcloud.DefaultEndpoint).
	APIEndpoint string `json:"api_endpoint,omitempty"`
	// PollInterval is the shortest time between two polls (default 5s).
	PollInterval time.Duration `json:"poll_interval,omitempty"`
}

// Defaults of an import.
const (
	DefaultWaitTimeout  = 6 * time.Hour
	DefaultPollInterval = 5 * time.Second
)

func (i ImportSpec) withDefaults() ImportSpec {
	if i.Wait {
		i.Enabled = true
	}
	if i.WaitTimeout == 0 {
		i.WaitTimeout = DefaultWaitTimeout
	}
	if i.APIEndpoint == "" {
		i.APIEndpoint = jdcloud.DefaultEndpoint
	}
	if i.PollInterval == 0 {
		i.PollInterval = DefaultPollInterval
	}
	return i
}

func (i *ImportSpec) validate() error {
	if i.WaitTimeout < 0 {
		return fmt.Errorf("--wait-timeout %s: give a positive duration such as 6h", i.WaitTimeout)
	}
	if i.PollInterval < 0 {
		return fmt.Errorf("--poll-interval %s: give a positive duration", i.PollInterval)
	}
	if i.APIEndpoint != "" && !isHTTPURL(i.APIEndpoint) {
		return fmt.Errorf("--jdcloud-api-endpoint %q: give a URL such as https://vm.jdcloud-api.com", i.APIEndpoint)
	}
	return nil
}

// ImportError is a failure of the import stage (the API refused the call
// or the credentials, the task failed, the wait timed out): the upload
// itself is complete. errors.Is matches the jdcloud sentinels through it.
type ImportError struct{ Err error }

func (e *ImportError) Error() string { return e.Err.Error() }
func (e *ImportError) Unwrap() error { return e.Err }

// ImportResult is what an import did: for people and in --json.
type ImportResult struct {
	// Object is the imported object, s3://BUCKET/KEY.
	Object   string `json:"object,omitempty"`
	Region   string `json:"region"`
	Endpoint string `json:"endpoint"`
	ImageID  string `json:"image_id,omitempty"`
	// TaskID is the import task; `convert import-status TASK_ID` follows it.
	TaskID    jdcloud.TaskID `json:"task_id,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	// Credentials says where the API's credentials came from (never the
	// secret).
	Credentials string `json:"credentials,omitempty"`
	// Request is the ImportImage body sent.
	Request jdcloud.ImportImageRequest `json:"request"`
	// Status is "submitted" without a wait, else the task's last state
	// (finished, failed; pending or running at the time-out); "refused"
	// when ImportImage failed.
	Status string `json:"status"`
	// Task is the task's last state, after a wait.
	Task        *jdcloud.Task `json:"task,omitempty"`
	WaitSeconds float64       `json:"wait_seconds,omitempty"`
	// Seconds is the time the import took, the wait included: a run's
	// rate leaves it out.
	Seconds float64 `json:"seconds,omitempty"`
	// Flags are the command-line flags that reach the same API and store
	// (--jdcloud-region, --jdcloud-api-endpoint, --endpoint, ...), for the
	// commands a report suggests.
	Flags string `json:"-"`
	// Error is the error that ended the import, if any.
	Error string `json:"error,omitempty"`
}

// API is a client of the cloud's OpenAPI and where its credentials came
// from.
type API struct {
	*jdcloud.Client
	// Creds names the credentials' source, never the secret.
	Creds string
}

// APIRegion is the region of an import: the store's --jdcloud-region, else
// the region of a jdcloud-oss endpoint, else --region.
func APIRegion(st Store, c *upload.Client) (string, error) {
	switch {
	case st.JDCloudRegion != "":
		return st.JDCloudRegion, nil
	case c != nil && c.JDCloudRegion != "":
		return c.JDCloudRegion, nil
	case st.Region != "":
		return st.Region, nil
	}
	return "", &SpecError{errors.New("the import needs the cloud's region: give --jdcloud-region (cn-north-1, ...) or --region")}
}

// apiCredentials is the chain of credentials for the OpenAPI: a separate
// pair in JDCLOUD_ACCESS_KEY_ID / JDCLOUD_SECRET_ACCESS_KEY, else the jdc
// CLI's current profile (~/.jdc/config), else the store's AWS chain (the
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

// UserAgent is what the API client sends as its User-Agent.
var UserAgent = "vmimport-convert"

// ConnectAPI makes the OpenAPI client for the import of an object in the
// store c reaches. With preflight it checks, with one cheap read
// (DescribeImageTasks of task 0), that the endpoint answers and takes the
// credentials: before an upload of hours, not after.
func ConnectAPI(ctx context.Context, st Store, c *upload.Client, is ImportSpec, log func(string), preflight bool) (*API, error) {
	is = is.withDefaults()
	region, err := APIRegion(st, c)
	if err != nil {
		return nil, err
	}
	creds := apiCredentials(c)
	cr, err := creds.Retrieve(ctx)
	if err != nil {
		if err == jdcloud.ErrNoCredentials {
			err = fmt.Errorf("%w: set %s and %s, or configure the jdc CLI (~/.jdc/config), or AWS credentials", err, jdcloud.EnvAccessKeyID, jdcloud.EnvSecretAccessKey)
		}
		return nil, &ImportError{err}
	}
	cfg := jdcloud.Config{
		Endpoint: is.APIEndpoint, Region: region, Credentials: creds, UserAgent: UserAgent, Log: log,
	}
	api, err := jdcloud.New(cfg)
	if err != nil {
		return nil, &SpecError{err}
	}
	a := &API{Client: api, Creds: cr.String()}
	if !preflight {
		return a, nil
	}
	// The check fails fast: an API that cannot be reached is told in
	// seconds, not after the retries (6 attempts, up to 20 s apart) that
	// the import's own calls get.
	cfg.MaxAttempts, cfg.MaxBackoff = 3, time.Second
	probe, err := jdcloud.New(cfg)
	if err != nil {
		return nil, &SpecError{err}
	}
	_, err = probe.DescribeImageTasks(ctx, jdcloud.DescribeImageTasksRequest{TaskIDs: []jdcloud.TaskID{"0"}})
	if errors.Is(err, jdcloud.ErrUnauthorized) || errors.Is(err, jdcloud.ErrNetwork) || errors.Is(err, jdcloud.ErrNoCredentials) {
		return nil, &ImportError{fmt.Errorf("checking the cloud's API at %s: %w%s", api.Endpoint(), err, a.credsHint(err))}
	}
	return a, nil
}

// credsHint tells which credentials were refused.
func (a *API) credsHint(err error) string {
	if errors.Is(err, jdcloud.ErrUnauthorized) && a.Creds != "" {
		return "; the credentials were " + a.Creds
	}
	return ""
}

// ImportRequest is the API's request for the body an upload built.
func ImportRequest(b upload.ImportImageBody) jdcloud.ImportImageRequest {
	return jdcloud.ImportImageRequest{
		Architecture: b.Architecture, OSType: b.OSType, Platform: b.Platform, DiskFormat: b.DiskFormat,
		SystemDiskSizeGB: b.SystemDiskSizeGB, ImageURL: b.ImageURL, OSVersion: b.OSVersion, ImageName: b.ImageName,
		Description: b.Description, ForceImport: b.ForceImport, ClientToken: b.ClientToken,
	}
}

// ImportHooks report what an import does. Any may be nil.
type ImportHooks struct {
	// Phase is told when the import submits and when it starts waiting.
	Phase func(Phase)
	// Task hears every state of the task while waiting.
	Task func(jdcloud.Task)
	// Notice receives lines for people: where the object stays after a
	// failure, how to follow the task.
	Notice func(string)
	// Warning receives findings worth a user's attention (ImportObject's:
	// a link signed with temporary credentials, an OS not known).
	Warning func(string)
	// Store is the store of the object: the commands the notices suggest
	// name it (--endpoint, ...) as the run did.
	Store Store
}

// Flags are the command-line flags of a convert command that reach the
// store st (as given) and the API a: what the commands a report or a
// notice suggests need to find the same object and task.
func (a *API) Flags(st Store) string {
	var f []string
	add := func(flag, v string) {
		if v != "" {
			f = append(f, flag, shellWord(v))
		}
	}
	add("--endpoint", st.Endpoint)
	switch {
	case st.JDCloudRegion != "":
		add("--jdcloud-region", st.JDCloudRegion)
	case st.Region != "":
		add("--region", st.Region)
	default:
		add("--jdcloud-region", a.Region())
	}
	if st.PathStyle && st.Endpoint != "" {
		f = append(f, "--path-style")
	}
	add("--profile", st.Profile)
	if ep := a.Endpoint(); ep != "" && strings.TrimSuffix(ep, "/") != strings.TrimSuffix(jdcloud.DefaultEndpoint, "/") {
		add("--jdcloud-api-endpoint", ep)
	}
	return strings.Join(f, " ")
}

// shellWord quotes s for a POSIX shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (h ImportHooks) warn(s string) {
	if h.Warning != nil {
		h.Warning(s)
	}
}

// Import calls ImportImage with body for object and, with is.Wait, follows
// the task to its end. The result is filled as far as the import got; the
// error is an *ImportError.
func (a *API) Import(ctx context.Context, body upload.ImportImageBody, object string, is ImportSpec, h ImportHooks) (*ImportResult, error) {
	is = is.withDefaults()
	notice := func(format string, args ...any) {
		if h.Notice != nil && ctx.Err() == nil {
			h.Notice(fmt.Sprintf(format, args...))
		}
	}
	if h.Phase != nil {
		h.Phase(Importing)
	}
	req := ImportRequest(body)
	res := &ImportResult{Object: object, Region: a.Region(), Endpoint: a.Endpoint(), Credentials: a.Creds, Request: req, Flags: a.Flags(h.Store)}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	r, err := a.ImportImage(ctx, req)
	if err != nil {
		res.Status, res.Error = "refused", err.Error()
		notice("the object stays at %s; import it later with `convert import %s %s`", object, shellWord(object), res.Flags)
		return res, &ImportError{fmt.Errorf("%w%s", err, a.credsHint(err))}
	}
	res.ImageID, res.TaskID, res.RequestID, res.Status = r.ImageID, r.TaskID, r.RequestID, "submitted"
	if !is.Wait {
		return res, nil
	}
	if h.Phase != nil {
		h.Phase(WaitingImport)
	}
	waitStart := time.Now()
	tasks, err := a.WaitTasks(ctx, []jdcloud.TaskID{r.TaskID}, jdcloud.WaitOptions{
		Timeout: is.WaitTimeout, MinInterval: is.PollInterval, MaxInterval: max(60*time.Second, is.PollInterval),
		Progress: h.Task,
		Log: func(s string) {
			if h.Notice != nil {
				h.Notice(s)
			}
		},
	})
	res.WaitSeconds = time.Since(waitStart).Seconds()
	t := tasks[0]
	res.Task, res.Status = &t, t.TaskStatus
	if t.ImageID != "" {
		res.ImageID = t.ImageID
	}
	if err != nil {
		res.Error = err.Error()
		switch {
		case errors.Is(err, jdcloud.ErrTaskFailed):
			notice("the object stays at %s; once the image is fixed, upload it again, or import it anew with `convert import %s %s --client-token NEW-TOKEN`", object, shellWord(object), res.Flags)
		case errors.Is(err, jdcloud.ErrWaitTimeout):
			notice("the import goes on in the cloud; follow it with `convert import-status %s --wait %s`", r.TaskID, res.Flags)
		}
		return res, &ImportError{fmt.Errorf("%w%s", err, a.credsHint(err))}
	}
	return res, nil
}

// OSHint is the warning for an import whose OS the check could not tell
// and no flag said: the body then says linux / x86_64 / Other Linux.
func OSHint(b upload.ImportImageBody) string {
	return fmt.Sprintf("the import check could not tell the operating system: importing as osType %s, architecture %s, platform %q; "+
		"give --os-type, --platform, --os-version and --architecture to say what it is", b.OSType, b.Architecture, b.Platform)
}
