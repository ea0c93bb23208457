// Package deploy checks the deployment files: every Kubernetes manifest
// decodes strictly (unknown fields rejected) into the k8s.io/api types
// (and the Prometheus Operator's), the worker's memory request is derived
// from its --memory, the dashboard and the alerts query only metrics a
// real worker exports, and the manifests name the image make image
// builds. It is a module of its own so that the tool's module has no
// Kubernetes dependencies.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// documents splits the YAML files of kubernetes/ into documents.
func documents(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	docs := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(d)) == "" {
				continue
			}
			docs[fmt.Sprintf("%s#%d", f, i)] = []byte(d)
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// decode decodes a document strictly into the type of its kind.
func decode(name string, doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "batch/v1 Job":
		obj = &batchv1.Job{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "monitoring.coreos.com/v1 PodMonitor":
		obj = &monitoringv1.PodMonitor{}
	case "monitoring.coreos.com/v1 PrometheusRule":
		obj = &monitoringv1.PrometheusRule{}
	default:
		return nil, fmt.Errorf("%s: kind %q of %q has no check here", name, tm.Kind, tm.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// TestManifestsStrict: every manifest decodes with no unknown field, and
// the objects are what the README says: a worker Deployment, a submitting
// Job and the ConfigMap with its manifest.
func TestManifestsStrict(t *testing.T) {
	kinds := map[string]int{}
	for name, doc := range documents(t) {
		obj, err := decode(name, doc)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			kinds["Deployment"]++
			checkWorker(t, name, o)
		case *batchv1.Job:
			kinds["Job"]++
			checkSubmit(t, name, o)
		case *monitoringv1.PodMonitor:
			kinds["PodMonitor"]++
		case *monitoringv1.PrometheusRule:
			kinds["PrometheusRule"]++
		case *corev1.ConfigMap:
			kinds["ConfigMap"]++
			if !strings.Contains(o.Data["disks.jsonl"], `"source"`) {
				t.Errorf("%s: the ConfigMap holds no manifest", name)
			}
		}
	}
	if kinds["Deployment"] != 1 || kinds["Job"] != 1 || kinds["ConfigMap"] != 1 || kinds["PodMonitor"] != 1 || kinds["PrometheusRule"] != 1 {
		t.Errorf("objects found: %v", kinds)
	}
}

// TestStrictRejects: the strict decoding does reject an unknown field (a
// typo the API server would drop silently).
func TestStrictRejects(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicass: 3\n")
	if _, err := decode("typo", doc); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}

// flag returns the value of --name in args.
func flag(args []string, name string) string {
	i := slices.Index(args, "--"+name)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// parseSize reads a --memory value as convert does (k, M, G, T are
// powers of 1024).
func parseSize(t *testing.T, s string) int64 {
	t.Helper()
	v := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"gib", 1 << 30}, {"mib", 1 << 20}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"t", 1 << 40}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("--memory %q: %v", s, err)
	}
	return n * mult
}

func checkWorker(t *testing.T, name string, d *appsv1.Deployment) {
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "worker" || !strings.HasPrefix(flag(c.Args, "queue"), "tls://") {
		t.Errorf("%s: args %v: want worker --queue tls://... (the queue behind TLS)", name, c.Args)
	}
	// A message is input from the network: the worker is told where it
	// may read and write.
	if flag(c.Args, "allow-source") == "" || flag(c.Args, "allow-output") == "" {
		t.Errorf("%s: args %v: want --allow-source and --allow-output", name, c.Args)
	}
	checkNATSCreds(t, name, c, spec.Volumes)
	mem := flag(c.Args, "memory")
	if mem == "" {
		t.Fatalf("%s: no --memory", name)
	}
	want := resource.NewQuantity(parseSize(t, mem)+128<<20, resource.BinarySI)
	for what, q := range map[string]resource.Quantity{"requests": c.Resources.Requests[corev1.ResourceMemory], "limits": c.Resources.Limits[corev1.ResourceMemory]} {
		if q.Cmp(*want) != 0 {
			t.Errorf("%s: %s.memory %s, want --memory %s + 128Mi = %s", name, what, q.String(), mem, want.String())
		}
	}
	drain, err := time.ParseDuration(flag(c.Args, "drain-timeout"))
	if err != nil {
		t.Fatalf("%s: --drain-timeout: %v", name, err)
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain {
		t.Errorf("%s: terminationGracePeriodSeconds %v must exceed --drain-timeout %s", name, g, drain)
	}
	if len(c.EnvFrom) == 0 || c.EnvFrom[0].SecretRef == nil {
		t.Errorf("%s: the credentials must come from a Secret", name)
	}
	for _, e := range c.Env {
		if strings.Contains(e.Name, "SECRET") || strings.Contains(e.Name, "ACCESS_KEY") {
			t.Errorf("%s: credential %s in plain env", name, e.Name)
		}
	}
}

// checkNATSCreds: the container reaches the queue with credentials and a
// CA from a Secret, mounted as files, never in plain env.
func checkNATSCreds(t *testing.T, name string, c corev1.Container, vols []corev1.Volume) {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if strings.HasPrefix(e.Name, "NATS_") && (strings.Contains(e.Name, "PASSWORD") || strings.Contains(e.Value, "-----")) {
			t.Errorf("%s: %s holds a secret in plain env", name, e.Name)
		}
	}
	if env["NATS_CREDS"] == "" || env["NATS_CA"] == "" {
		t.Errorf("%s: no NATS_CREDS and NATS_CA: the queue takes no anonymous client", name)
		return
	}
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(env["NATS_CREDS"], m.MountPath+"/") {
			continue
		}
		for _, v := range vols {
			if v.Name == m.Name && v.Secret != nil {
				return
			}
		}
	}
	t.Errorf("%s: NATS_CREDS %s is not on a Secret volume", name, env["NATS_CREDS"])
}

func checkSubmit(t *testing.T, name string, j *batchv1.Job) {
	c := j.Spec.Template.Spec.Containers[0]
	checkNATSCreds(t, name, c, j.Spec.Template.Spec.Volumes)
	if len(c.Args) < 2 || c.Args[0] != "batch" || flag(c.Args, "queue") == "" || !slices.Contains(c.Args, "--wait") {
		t.Errorf("%s: args %v: want batch MANIFEST --queue ... --wait", name, c.Args)
	}
	var mounted bool
	for _, v := range j.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "convert-manifest" {
			mounted = true
		}
	}
	if !mounted || !bytes.HasPrefix([]byte(c.Args[1]), []byte("/manifest/")) {
		t.Errorf("%s: the manifest must come from the ConfigMap convert-manifest", name)
	}
}

// TestSystemdUnit: the unit starts a worker, stops it with SIGTERM and
// waits longer than its drain time-out; no credential is in it.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/convert-worker.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"ExecStart=/usr/local/bin/convert worker --queue", "KillSignal=SIGTERM", "EnvironmentFile=", "[Install]"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	drain := regexp.MustCompile(`--drain-timeout (\S+)`).FindStringSubmatch(unit)
	stop := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)$`).FindStringSubmatch(unit)
	if drain == nil || stop == nil {
		t.Fatal("no --drain-timeout or TimeoutStopSec")
	}
	d, _ := time.ParseDuration(drain[1])
	s, _ := strconv.Atoi(stop[1])
	if time.Duration(s)*time.Second <= d {
		t.Errorf("TimeoutStopSec=%d must exceed --drain-timeout %s", s, d)
	}
	if regexp.MustCompile(`(?m)^Environment=AWS_SECRET`).MatchString(unit) {
		t.Error("a credential in the unit")
	}
}
