package jdcloudtest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"vmimport/internal/testkit"
)

// SDKVersion is the jdcloud-sdk-js version .ci/jdcloud-sdk.sh installs.
const SDKVersion = "1.2.202"

//go:embed testdata/sdk.js
var sdkScript []byte

// SDK is the official JavaScript SDK, driven through node with
// testdata/sdk.js.
type SDK struct {
	// Dir is the jdcloud-sdk-js package folder.
	Dir    string
	node   string
	script string
}

// NeedSDK finds node and the SDK: $JDCLOUD_SDK_JS, else the cache folder
// .ci/jdcloud-sdk.sh installs into, where it installs the SDK with npm on
// first use as that script does. Without node (or npm, for the install) it
// skips the test, or fails it under CI=true.
func NeedSDK(t testing.TB) *SDK {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: CI must run .ci/jdcloud-sdk.sh and export JDCLOUD_SDK_JS", why)
		}
		t.Skipf("%s: run `eval \"$(.ci/jdcloud-sdk.sh)\"`", why)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	dir := os.Getenv("JDCLOUD_SDK_JS")
	if dir == "" {
		cache := os.Getenv("JDCLOUD_SDK_CACHE")
		if c, err := os.UserCacheDir(); err == nil && cache == "" {
			cache = filepath.Join(c, "vmimport", "jdcloud-sdk-js-"+SDKVersion)
		}
		if cache != "" {
			dir = filepath.Join(cache, "node_modules", "jdcloud-sdk-js")
			if err := installSDK(cache, dir); err != nil {
				missing(err.Error())
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "src", "lib", "signers", "v2.js")); err != nil {
		missing("jdcloud-sdk-js is not installed at " + dir)
	}
	var pkg struct{ Version string }
	if b, err := os.ReadFile(filepath.Join(dir, "package.json")); err != nil || json.Unmarshal(b, &pkg) != nil || pkg.Version != SDKVersion {
		missing("jdcloud-sdk-js at " + dir + " is not version " + SDKVersion)
	}
	script := filepath.Join(t.TempDir(), "sdk.js")
	if err := os.WriteFile(script, sdkScript, 0o644); err != nil {
		t.Fatal(err)
	}
	return &SDK{Dir: dir, node: node, script: script}
}

// SDKEndpoint is the SDK's endpoint option.
type SDKEndpoint struct {
	Protocol string `json:"protocol"` // http, https
	Host     string `json:"host"`     // host[:port]
}

// SDKCase is one request for the SDK to make.
type SDKCase struct {
	Name string `json:"name"`
	// Op is the vm service's method: importImage, imageTasks.
	Op        string         `json:"op"`
	Opts      map[string]any `json:"opts"`
	Region    string         `json:"region"`
	Endpoint  SDKEndpoint    `json:"endpoint"`
	AccessKey string         `json:"accessKey"`
	SecretKey string         `json:"secretKey"`
	// Date (RFC 3339) and Nonce fix the signature's time and nonce when
	// the request is captured, not sent.
	Date  string `json:"date"`
	Nonce string `json:"nonce"`
	// Send sends the request to the endpoint for real (with the SDK's own
	// clock and nonce) instead of capturing it.
	Send bool `json:"send"`
}

// SDKResult is what the SDK put on the wire (and, when sent, the answer).
type SDKResult struct {
	Name          string            `json:"name"`
	Method        string            `json:"method"`
	URL           string            `json:"url"`
	Headers       map[string]string `json:"headers"`
	Body          string            `json:"body"`
	Authorization string            `json:"authorization"`
	Status        int               `json:"status"`
	Answer        json.RawMessage   `json:"answer"`
	Error         string            `json:"error"`
}

// Run makes the requests with the SDK.
func (s *SDK) Run(t testing.TB, cases []SDKCase) []SDKResult {
	t.Helper()
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.node, s.script)
	cmd.Env = append(os.Environ(), "JDCLOUD_SDK_JS="+s.Dir)
	cmd.Stdin = bytes.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("node sdk.js: %v\n%s", err, errb.String())
	}
	var res []SDKResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("node sdk.js: %v\n%s", err, out.String())
	}
	if len(res) != len(cases) {
		t.Fatalf("node sdk.js: %d results for %d cases", len(res), len(cases))
	}
	for _, r := range res {
		if r.Error != "" {
			t.Fatalf("SDK case %s: %s", r.Name, r.Error)
		}
	}
	return res
}

// installSDK installs the SDK into cache with npm unless it is at dir
// already, as .ci/jdcloud-sdk.sh does (--ignore-scripts: nothing of the
// package runs). Test binaries started together take turns by a lock file.
func installSDK(cache, dir string) error {
	signer := filepath.Join(dir, "src", "lib", "signers", "v2.js")
	if _, err := os.Stat(signer); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("jdcloud-sdk-js is not installed at %s, and npm is not installed", dir)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	unlock, err := testkit.Lock(lock)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(signer); err == nil {
		return nil // installed by another test binary meanwhile
	}
	out, err := exec.Command(npm, "install", "--prefix", cache, "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error", "jdcloud-sdk-js@"+SDKVersion).CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm install jdcloud-sdk-js@%s: %v\n%s", SDKVersion, err, out)
	}
	return nil
}
