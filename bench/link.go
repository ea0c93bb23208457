package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// netns is a network namespace with a shaped loopback and a versitygw
// inside: every command of a link case runs in it, so all its traffic
// crosses the shaped lo.
type netns struct {
	name     string
	endpoint string
	server   *exec.Cmd
	data     string
}

// wrap makes argv run inside the namespace.
func (n *netns) wrap(argv []string) []string {
	return append([]string{"ip", "netns", "exec", n.name}, argv...)
}

// sent is the byte counter of the namespace's lo qdisc: each packet on lo
// passes it once, so both directions are counted, once each.
func (n *netns) sent(ctx context.Context) (int64, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.name, "tc", "-s", "qdisc", "show", "dev", "lo").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("tc -s qdisc show: %v: %s", err, out)
	}
	return ParseTCSent(string(out))
}

// serverCPU is the CPU seconds versitygw has spent so far (0 if gone).
func (n *netns) serverCPU() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.server.Process.Pid))
	if err != nil {
		return 0
	}
	v, _ := parseProcCPU(string(b))
	return v
}

// run times argv inside the namespace, with its bytes on the wire and the
// server's CPU seconds meanwhile.
func (n *netns) run(ctx context.Context, argv []string) (Sample, error) {
	w0, err := n.sent(ctx)
	if err != nil {
		return Sample{}, err
	}
	c0 := n.serverCPU()
	s, err := Run(ctx, n.wrap(argv))
	if err != nil {
		return s, err
	}
	w1, err := n.sent(ctx)
	if err != nil {
		return s, err
	}
	s.WireBytes = w1 - w0
	s.ServerCPUSeconds = n.serverCPU() - c0
	return s, nil
}

// startNetns makes the namespace, shapes its lo to link, and starts
// versitygw inside on data. The caller must close it, also on error.
func startNetns(ctx context.Context, name string, link Link, gw, data string, logf func(string, ...any)) (*netns, error) {
	n := &netns{name: name, data: data}
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", link.Name, "burst", "256kb", "latency", "50ms"},
	}
	for i, argv := range steps {
		if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			if i == 0 {
				n.name = "" // not made: nothing to delete
			}
			return n, fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return n, err
	}
	log, err := os.Create(data + ".log")
	if err != nil {
		return n, err
	}
	defer log.Close()
	const port = "127.0.0.1:7070" // the namespace is new: every port is free
	n.endpoint = "http://" + port
	n.server = exec.Command("ip", "netns", "exec", name, gw, "--port", port, "--health", "/healthz", "posix", data)
	// The root keys are the ones the tools sign with (AWS_* of the
	// environment), given in the environment, not on a command line.
	n.server.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+os.Getenv("AWS_ACCESS_KEY_ID"), "ROOT_SECRET_KEY="+os.Getenv("AWS_SECRET_ACCESS_KEY"))
	n.server.Stdout, n.server.Stderr = log, log
	detach(n.server) // a ctrl-C is for us: we stop it last
	if err := n.server.Start(); err != nil {
		n.server = nil
		return n, fmt.Errorf("versitygw: %w", err)
	}
	logf("versitygw (pid %d) on %s inside network namespace %s, lo shaped to %s", n.server.Process.Pid, n.endpoint, name, link.Name)
	return n, nil
}

// close stops the server and deletes the namespace and the server's data.
// It runs also after a cancel, so it does not use the run's context.
func (n *netns) close() {
	if n.server != nil {
		n.server.Process.Kill()
		n.server.Wait()
	}
	if n.name != "" {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: ip netns del %s: %v: %s\n", n.name, err, out)
		}
	}
	if n.data != "" {
		os.RemoveAll(n.data)
		os.Remove(n.data + ".log")
	}
}

// findVersityGW is the versitygw binary: o.VersityGW, else on PATH, else
// where .ci/versitygw.sh installs it.
func findVersityGW(o *SuiteOptions) (string, error) {
	if o.VersityGW != "" {
		return exec.LookPath(o.VersityGW)
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "vmimport", "versitygw-v1.8.0", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no versitygw on PATH nor at %s (run: eval \"$(.ci/versitygw.sh)\" once)", p)
	}
	return p, nil
}

// The link cases' disk: 2 GiB virtual (--small) with about 400 MB of data,
// a sparse VMDK as VirtualBox and VMware export it.
const (
	linkFill   = 0.2
	linkPart   = 8 << 20 // convert's own part size for 2 GiB (it runs at its defaults); the peers get the same
	linkSource = "vmdk monolithicSparse"
)

// LinkCaseName is the name of the link case over link (for --cases).
func LinkCaseName(l Link) string {
	return fmt.Sprintf("%s -> s3 over %s link (%.0f%%)", linkSource, l.Name, linkFill*100)
}

// linkPeer is one way to do the same with qemu-img and an uploader: a
// shell pipeline timed as one command.
type linkPeer struct {
	name string // what the tables call it
	cmd  string // sh -c script; $SRC, $TMP, $URL, $DST are set by the caller
}

func linkPeers(aws string) []linkPeer {
	awsCp := aws + ` --endpoint-url "$URL" s3 cp "$TMP" "s3://$DST" --only-show-errors`
	// rclone cannot take a CA bundle from AWS_CA_BUNDLE (it fails on it):
	// unset for rclone. Its remote comes from RCLONE_CONFIG_BENCH_*.
	// --ignore-times: the object of the previous round has the same size
	// and MD5, and rclone would only update its mtime.
	rclone := fmt.Sprintf(`env -u AWS_CA_BUNDLE rclone copyto --ignore-times "$TMP" "bench:$DST" --s3-endpoint "$URL" --s3-chunk-size %dM --s3-upload-cutoff %dM --s3-upload-concurrency 8 --s3-no-check-bucket`, linkPart>>20, linkPart>>20)
	q := func(opts string) string { return `qemu-img convert ` + opts + ` "$SRC" "$TMP" && sync "$TMP" && ` }
	return []linkPeer{
		{"qemu-img -O raw + aws s3 cp", q("-O raw") + awsCp},
		{"qemu-img -O raw -m 16 -W + aws s3 cp", q("-m 16 -W -O raw") + awsCp},
		{"qemu-img -O raw + rclone copyto", q("-O raw") + rclone},
		{"qemu-img -O qcow2 + aws s3 cp", q("-O qcow2") + awsCp},
		{"qemu-img -O qcow2 -c + aws s3 cp", q("-O qcow2 -c") + awsCp},
		{"qemu-img -O qcow2 -c -m 16 -W + aws s3 cp", q("-m 16 -W -O qcow2 -c") + awsCp},
	}
}

// linkCases time convert's upload of a sparse VMDK against qemu-img
// followed by aws s3 cp or rclone copyto, with the S3 server and every
// tool inside a network namespace whose loopback is shaped to each of
// o.Links: migrations are bound by the link, and bytes not sent count.
func linkCases(ctx context.Context, o *SuiteOptions, rep *Report, gen func(string, int64, float64) (string, error), logf func(string, ...any)) error {
	var links []Link
	for _, l := range o.Links {
		if o.want(LinkCaseName(l)) {
			links = append(links, l)
		}
	}
	if len(links) == 0 {
		return nil
	}
	aws := o.AWS
	if aws == "" {
		aws = "/usr/bin/aws"
	}
	peers := linkPeers(shellQuote(aws))
	skipAll := ""
	gw, err := findVersityGW(o)
	switch {
	case os.Geteuid() != 0:
		skipAll = "needs root (ip netns, tc)"
	case err != nil:
		skipAll = err.Error()
	default:
		for _, tool := range []string{"ip", "tc", "qemu-img", aws} {
			if _, err := exec.LookPath(tool); err != nil {
				skipAll = fmt.Sprintf("no %s (bench/setup.sh installs iproute2, qemu-utils, awscli)", tool)
			}
		}
	}
	rawFile, err := gen(fmt.Sprintf("small-%02.0f", linkFill*100), o.Small, linkFill)
	if err != nil {
		return err
	}
	data := dataBytes(rawFile)
	base := Case{SourceFormat: linkSource, Output: "s3 upload (convert's default format)", VirtualSize: o.Small, DataBytes: data, Fill: linkFill}
	if skipAll != "" {
		for _, l := range links {
			for _, p := range peers {
				c := base
				c.Name, c.Peer, c.Link, c.LinkBitsPerSec, c.Skipped = LinkCaseName(l), p.name, l.Name, l.BitsPerSec, skipAll
				rep.Cases = append(rep.Cases, c)
			}
		}
		logf("link cases skipped: %s", skipAll)
		return nil
	}
	src := filepath.Join(o.Dir, fmt.Sprintf("small-%02.0f.vmdk", linkFill*100))
	if _, err := os.Stat(src); err != nil {
		logf("making %s", src)
		if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", rawFile, src).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img convert -O vmdk: %v: %s", err, out)
		}
	}
	if !o.Keep {
		defer os.Remove(src)
	}
	// The tools' settings, the same for every link: multipart parts of
	// linkPart, 8 in flight (convert's default --upload-concurrency).
	cfg := filepath.Join(o.Dir, "aws-config-link")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "[default]\ns3 =\n  multipart_chunksize = %dMB\n  multipart_threshold = %dMB\n  max_concurrent_requests = 8\n", linkPart>>20, linkPart>>20), 0o644); err != nil {
		return err
	}
	os.Setenv("AWS_CONFIG_FILE", cfg)
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" || os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		// Our own server: any keys do.
		os.Setenv("AWS_ACCESS_KEY_ID", "bench"+randomHex(6))
		os.Setenv("AWS_SECRET_ACCESS_KEY", randomHex(20))
	}
	if os.Getenv("AWS_REGION") == "" {
		os.Setenv("AWS_REGION", "us-east-1")
	}
	for k, v := range map[string]string{"TYPE": "s3", "PROVIDER": "Other", "ENV_AUTH": "true", "REGION": os.Getenv("AWS_REGION")} {
		os.Setenv("RCLONE_CONFIG_BENCH_"+k, v)
	}
	_, rcloneErr := exec.LookPath("rclone")
	for _, l := range links {
		if err := oneLink(ctx, o, rep, l, base, src, gw, aws, peers, rcloneErr, logf); err != nil {
			return err
		}
	}
	return nil
}

// oneLink measures ours and every peer over one link, in rounds: each
// round runs every tool once, the order turned by one each round, so that
// drifts of the machine fall on all alike.
func oneLink(ctx context.Context, o *SuiteOptions, rep *Report, l Link, base Case, src, gw, aws string, peers []linkPeer, rcloneErr error, logf func(string, ...any)) (err error) {
	name := fmt.Sprintf("vmimport-bench-%d-%s", os.Getpid(), l.Name)
	logf("link %s: network namespace %s", l.Name, name)
	ns, err := startNetns(ctx, name, l, gw, filepath.Join(o.Dir, "versitygw-"+l.Name), logf)
	defer ns.close()
	if err != nil {
		return err
	}
	bucket := fmt.Sprintf("bench-link-%d", time.Now().UnixNano()%1e9)
	// The bucket, made as soon as the server answers.
	for i := 0; ; i++ {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, aws, "--endpoint-url", ns.endpoint, "s3", "mb", "s3://"+bucket).CombinedOutput()
		if err == nil {
			break
		}
		if i == 40 || ctx.Err() != nil {
			return fmt.Errorf("aws s3 mb in %s: %v: %s", name, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	tmp := filepath.Join(o.Dir, "peer-link.out")
	defer os.Remove(tmp)
	os.Setenv("RCLONE_CONFIG_BENCH_ENDPOINT", ns.endpoint)
	type tool struct {
		name    string
		argv    []string
		samples []Sample
		skip    string
	}
	// Ours at its defaults (QCOW2, --compress auto, parts planned from
	// the size: linkPart for this disk).
	tools := []*tool{{name: "convert", argv: []string{o.Convert, src, "-o", "s3://" + bucket + "/ours", "--endpoint", ns.endpoint,
		"--progress", "never"}}}
	for i, p := range peers {
		// The pipeline's inputs, as its environment's variables: the
		// shell command names no temporary path.
		t := &tool{name: p.name, argv: []string{"env", "SRC=" + src, "TMP=" + tmp, "URL=" + ns.endpoint, fmt.Sprintf("DST=%s/peer-%d", bucket, i), "sh", "-c", p.cmd}}
		if strings.Contains(p.name, "rclone") && rcloneErr != nil {
			t.skip = "rclone is not installed (apt-get install rclone)"
		}
		tools = append(tools, t)
	}
	for round := range o.Runs {
		for k := range tools {
			t := tools[(k+round)%len(tools)]
			if t.skip != "" {
				continue
			}
			os.Remove(tmp)
			s, err := ns.run(ctx, t.argv)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				logf("  failed: %v", err)
				t.skip = t.name + " failed: " + strings.TrimPrefix(skipReason(err, o.Dir, ns.wrap(t.argv)), "ip: ")
				continue
			}
			// An uploader that sent less than half its file did not
			// upload it (rclone skips an object it thinks it has).
			if fi, err := os.Stat(tmp); err == nil && t.name != "convert" && s.WireBytes < fi.Size()/2 {
				t.skip = fmt.Sprintf("%s sent %.0f MB for a %.0f MB file: it did not upload it", t.name, float64(s.WireBytes)/1e6, float64(fi.Size())/1e6)
				logf("  failed: %s", t.skip)
				continue
			}
			t.samples = append(t.samples, s)
			logf("  %s round %d, %s: %.1fs, %.0f MB on the wire, %.1f CPU s, server %.1f CPU s", l.Name, round+1, t.name, s.Seconds, float64(s.WireBytes)/1e6, s.CPUSeconds, s.ServerCPUSeconds)
		}
		if tools[0].skip != "" {
			break
		}
	}
	ours := tools[0]
	for i, p := range peers {
		t := tools[i+1]
		c := base
		c.Name, c.Peer, c.Link, c.LinkBitsPerSec = LinkCaseName(l), p.name, l.Name, l.BitsPerSec
		switch {
		case ours.skip != "":
			c.Skipped = ours.skip
		case t.skip != "":
			c.Skipped = t.skip
		default:
			c.Ours, c.Theirs = Summarize(ours.samples), Summarize(t.samples)
			c.Ratio = Ratio(c.Ours.Seconds, c.Theirs.Seconds)
			c.RatioMin, c.RatioMax = RatioSpread(c.Ours.Runs, c.Theirs.Runs)
			logf("  %s: ours %.1fs, %s %.1fs: %.2fx", c.Name, c.Ours.Seconds, c.Peer, c.Theirs.Seconds, c.Ratio)
		}
		rep.Cases = append(rep.Cases, c)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LinkGoal is a speed-up the link cases are held to (issue 19).
type LinkGoal struct {
	Link  string
	Peer  string
	Ratio float64
}

// LinkGoals: on the 2 GiB disk with ~400 MB of data.
var LinkGoals = []LinkGoal{
	{"1gbit", "qemu-img -O raw + aws s3 cp", 3},
	{"1gbit", "qemu-img -O raw + rclone copyto", 2},
	{"1gbit", "qemu-img -O qcow2 + aws s3 cp", 1.3},
	{"100mbit", "qemu-img -O raw + aws s3 cp", 4},
	{"100mbit", "qemu-img -O qcow2 -c + aws s3 cp", 1.5},
}
