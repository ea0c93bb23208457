package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// scrapeFile is a real scrape of the workers of a queue run: the families
// the tool exports. cmd/convert/queuetest's TestQueueMetrics writes it
// (-update) and fails when the workers' families and it part.
const scrapeFile = "testdata/worker-scrape.prom"

// families reads the recorded scrape: each family's type by name.
func families(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(scrapeFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 4 && fs[0] == "#" && fs[1] == "TYPE" {
			out[fs[2]] = fs[3]
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s: only %d families", scrapeFile, len(out))
	}
	return out
}

// The names the issue, the README, the dashboard and the alerts rely on.
var contract = []string{"convert_disks_total", "convert_disks_running", "convert_read_bytes_total", "convert_written_bytes_total",
	"convert_upload_bytes_total", "convert_disk_duration_seconds", "convert_upload_part_retries_total", "convert_import_tasks_total",
	"convert_check_findings_total", "convert_memory_budget_used_bytes", "convert_queue_pending_messages"}

var metricName = regexp.MustCompile(`\bconvert_[a-z0-9_]+`)

// metricsOf lists the convert_ metrics a PromQL expression names.
func metricsOf(expr string) []string { return metricName.FindAllString(expr, -1) }

// known tells whether name is a family of the scrape, or a series of a
// histogram family (_bucket, _sum, _count).
func known(fams map[string]string, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && (fams[base] == "histogram" || fams[base] == "summary") {
			return true
		}
	}
	return false
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string         `json:"title"`
	Type       string         `json:"type"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/convert-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/convert-fleet.json: %v", err)
	}
	return &d
}

// queries lists the dashboard's queries by where they are.
func (d *dashboard) queries() map[string]string {
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for i, tg := range p.Targets {
				out[p.Title+"#"+string(rune('A'+i))] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			json.Unmarshal(v.Query, &q.Query)
		}
		out["variable "+v.Name] = q.Query
	}
	return out
}

// TestDashboardMetricsExist: every metric the dashboard queries is in a
// real worker's scrape, and the dashboard shows every metric of the
// contract.
func TestDashboardMetricsExist(t *testing.T) {
	fams := families(t)
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("the dashboard has no uid or title")
	}
	used := map[string]bool{}
	qs := d.queries()
	if len(qs) < 20 {
		t.Errorf("only %d queries", len(qs))
	}
	for where, q := range qs {
		names := metricsOf(q)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no convert_ metric", where, q)
		}
		for _, n := range names {
			if !known(fams, n) {
				t.Errorf("%s: %s is not in a worker's scrape (%s)", where, n, scrapeFile)
			}
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
		}
	}
	for _, n := range contract {
		if !used[n] {
			t.Errorf("the dashboard shows no %s", n)
		}
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && (p.Datasource["uid"] != "${datasource}" || len(p.Targets) == 0) {
				t.Errorf("panel %q: datasource %v, %d queries: want ${datasource} and a query", p.Title, p.Datasource, len(p.Targets))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []monitoringv1.RuleGroup `json:"groups"`
}

func readAlerts(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	return rf
}

// TestAlerts: the alerts of prometheus/alerts.yml and of the
// PrometheusRule are one group; each names only metrics of a worker's
// scrape (and the scrape's own up); the three the README advises are
// there.
func TestAlerts(t *testing.T) {
	fams := families(t)
	rf := readAlerts(t)
	var rule *monitoringv1.PrometheusRule
	for name, doc := range documents(t) {
		obj, err := decode(name, doc)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := obj.(*monitoringv1.PrometheusRule); ok {
			rule = r
		}
	}
	if rule == nil {
		t.Fatal("no PrometheusRule in kubernetes/")
	}
	if !reflect.DeepEqual(rule.Spec.Groups, rf.Groups) {
		t.Errorf("the PrometheusRule's groups differ from prometheus/alerts.yml's")
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			expr := r.Expr.String()
			for _, n := range metricsOf(expr) {
				if !known(fams, n) {
					t.Errorf("alert %s: %s is not in a worker's scrape", r.Alert, n)
				}
			}
			if len(metricsOf(expr)) == 0 && !strings.HasPrefix(expr, "up{") {
				t.Errorf("alert %s: %q names no metric of the workers", r.Alert, expr)
			}
		}
	}
	for _, a := range []string{"ConvertDiskFailed", "ConvertBacklogNotShrinking", "ConvertWorkerNoProgress"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
}

// TestPodMonitor: the PodMonitor selects the worker Deployment's pods and
// scrapes the port the worker serves its metrics on; the probes ask that
// port's /healthz and /readyz.
func TestPodMonitor(t *testing.T) {
	var pm *monitoringv1.PodMonitor
	var worker *appsv1.Deployment
	for name, doc := range documents(t) {
		obj, err := decode(name, doc)
		if err != nil {
			t.Fatal(err)
		}
		switch o := obj.(type) {
		case *monitoringv1.PodMonitor:
			pm = o
		case *appsv1.Deployment:
			worker = o
		}
	}
	if pm == nil || worker == nil {
		t.Fatal("no PodMonitor or no worker Deployment")
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(worker.Spec.Template.Labels)) {
		t.Errorf("the PodMonitor's selector %v does not select the worker pods %v", sel, worker.Spec.Template.Labels)
	}
	c := worker.Spec.Template.Spec.Containers[0]
	addr := flag(c.Args, "metrics-addr")
	if addr == "" || flag(c.Args, "log-format") != "json" {
		t.Fatalf("worker args %v: want --metrics-addr and --log-format json", c.Args)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil {
		t.Fatalf("PodMonitor endpoints %+v", pm.Spec.PodMetricsEndpoints)
	}
	port := *pm.Spec.PodMetricsEndpoints[0].Port
	found := false
	for _, p := range c.Ports {
		if p.Name == port {
			found = true
			if !strings.HasSuffix(addr, ":"+strconv.Itoa(int(p.ContainerPort))) {
				t.Errorf("port %s is %d; the worker serves on %s", port, p.ContainerPort, addr)
			}
		}
	}
	if !found {
		t.Errorf("the worker has no port named %s", port)
	}
	for what, pr := range map[string]string{"/healthz": probePath(c.LivenessProbe, port), "/readyz": probePath(c.ReadinessProbe, port)} {
		if pr != what {
			t.Errorf("probe %s: %q on port %s", what, pr, port)
		}
	}
}

func probePath(p *corev1.Probe, port string) string {
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != port {
		return ""
	}
	return p.HTTPGet.Path
}

// TestImageNamed: the manifests deploy the image make image builds (named
// convert, tagged with the version of cmd/convert/version.go) as the user
// the Containerfile sets; the Containerfile ships the binary on scratch,
// pulling nothing; the systemd unit runs the binary make install puts in
// place.
func TestImageNamed(t *testing.T) {
	vb, err := os.ReadFile("../cmd/convert/version.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\tversion\s*=\s*"([^"]+)"`).FindSubmatch(vb)
	if m == nil {
		t.Fatal("no version in cmd/convert/version.go")
	}
	version := string(m[1])
	cf, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	user := ""
	for _, l := range strings.Split(string(cf), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			user = f[1]
		case "RUN":
			t.Errorf("Containerfile: %q: the image builds nothing", l)
		}
	}
	if !slices.Equal(froms, []string{"scratch"}) || user != "65532:65532" || !strings.Contains(string(cf), "COPY convert /usr/local/bin/convert") ||
		!strings.Contains(string(cf), "/etc/ssl/certs/ca-certificates.crt") {
		t.Errorf("Containerfile: FROM %v, USER %q: want scratch, the binary, the CA bundle and uid 65532", froms, user)
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*convert$`).Match(mk) || !regexp.MustCompile(`(?m)^image:`).Match(mk) {
		t.Error("Makefile: no image target building IMAGE ?= convert")
	}
	images := 0
	for name, doc := range documents(t) {
		for _, img := range regexp.MustCompile(`(?m)^\s+image:\s*(\S+)`).FindAllStringSubmatch(string(doc), -1) {
			images++
			if path.Base(strings.Split(img[1], ":")[0]) != "convert" || !strings.HasSuffix(img[1], ":"+version) {
				t.Errorf("%s: image %s: want REGISTRY/convert:%s (make image, pushed)", name, img[1], version)
			}
		}
		for _, u := range regexp.MustCompile(`runAsUser:\s*(\d+)`).FindAllStringSubmatch(string(doc), -1) {
			if u[1]+":"+u[1] != user {
				t.Errorf("%s: runAsUser %s, the image's user is %s", name, u[1], user)
			}
		}
	}
	if images != 2 {
		t.Errorf("%d images in the manifests, want the worker's and the submitter's", images)
	}
	unit, err := os.ReadFile("systemd/convert-worker.service")
	if err != nil {
		t.Fatal(err)
	}
	prefix := regexp.MustCompile(`(?m)^PREFIX\s*\?=\s*(\S+)$`).FindSubmatch(mk)
	if prefix == nil || !strings.Contains(string(unit), "ExecStart="+filepath.Join(string(prefix[1]), "bin", "convert")+" worker") {
		t.Errorf("the unit does not run the binary make install puts in %s/bin", prefix)
	}
	if !strings.Contains(string(unit), "--metrics-addr ${CONVERT_METRICS_ADDR}") {
		t.Error("the unit serves no metrics")
	}
}

// TestPromtool: promtool, Prometheus's own checker, accepts the scrape
// configuration and the alerts, passes the alerts' unit tests
// (prometheus/alerts_test.yml) and parses every query of the dashboard.
// Skipped without promtool, but in CI (.ci/run installs it).
func TestPromtool(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed")
	}
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("prometheus", "check", "config", "prometheus.yml")
	run("prometheus", "test", "rules", "alerts_test.yml")
	// The dashboard's queries as recording rules: promtool parses each.
	qs := readDashboard(t).queries()
	var keys []string
	for k := range qs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var rules []map[string]string
	for i, k := range keys {
		if strings.HasPrefix(k, "variable ") {
			continue // Grafana's label_values(), not PromQL
		}
		q := strings.NewReplacer("$job", ".*", "${job}", ".*").Replace(qs[k])
		rules = append(rules, map[string]string{"record": "dashboard:query" + strconv.Itoa(i), "expr": q})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	run(dir, "check", "rules", "dashboard.yml")
}
