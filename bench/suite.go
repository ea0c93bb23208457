package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// SuiteOptions configure a benchmark suite run.
type SuiteOptions struct {
	Convert string    // our binary
	Dir     string    // scratch folder for disks and outputs (needs ~4x Size free)
	Out     string    // results folder (a dated subfolder is made inside)
	Size    int64     // virtual size of the uncompressed cases (default 8 GiB)
	Small   int64     // virtual size of the compressed cases (default 2 GiB)
	Fills   []float64 // fills for the QCOW2 -> RAW cases (default 0.1, 0.5, 0.9)
	Runs    int       // runs per tool and case (default 3)
	Workers []int     // worker counts for the scaling case (default 1, 2, 4)
	Seed    uint64
	Keep    bool      // keep the generated disks in Dir for the next run
	Log     io.Writer // progress lines; nil for none
	// Endpoint of a local S3 server (versitygw) for the end-to-end cases:
	// convert -> s3:// against qemu-img convert followed by aws s3 cp.
	// Empty: no upload cases. Credentials come from the AWS_* variables.
	Endpoint string
	// AWS is the aws command (Debian's awscli); default /usr/bin/aws.
	AWS string
	// Cases, if set, runs only the cases whose names match it.
	Cases *regexp.Regexp
	// Links are the shaped links of the link cases (see linkCases); none:
	// no link cases. They need root (network namespaces and tc).
	Links []Link
	// VersityGW is the versitygw binary the link cases start inside their
	// network namespace; default: on PATH, else where .ci/versitygw.sh
	// installs it.
	VersityGW string
}

// want reports whether the case named name is to run.
func (o *SuiteOptions) want(name string) bool { return o.Cases == nil || o.Cases.MatchString(name) }

// Case is one conversion measured against its peer.
type Case struct {
	Name         string  `json:"name"`
	SourceFormat string  `json:"source_format"`
	Output       string  `json:"output"`
	Peer         string  `json:"peer"`
	VirtualSize  int64   `json:"virtual_size"`
	DataBytes    int64   `json:"data_bytes"`
	Fill         float64 `json:"fill"`
	Ours         Summary `json:"ours"`
	Theirs       Summary `json:"peer_result"`
	Ratio        float64 `json:"ratio"` // peer seconds / our seconds: above 1, we are faster
	// The smallest and largest per-round ratio (see RatioSpread).
	RatioMin float64 `json:"ratio_min,omitempty"`
	RatioMax float64 `json:"ratio_max,omitempty"`
	Skipped  string  `json:"skipped,omitempty"`
	// Remote cases: the source file's size and what each tool fetched
	// from the web server in one run.
	FileBytes   int64   `json:"file_bytes,omitempty"`
	OursFetched Fetched `json:"ours_fetched,omitzero"`
	PeerFetched Fetched `json:"peer_fetched,omitzero"`
	// Link cases: the shaped link (tc tbf rate) all traffic crossed.
	Link           string  `json:"link,omitempty"`
	LinkBitsPerSec float64 `json:"link_bits_per_second,omitempty"`
}

// Scaling is our time for one case at several worker counts.
type Scaling struct {
	Case    string             `json:"case"`
	Seconds map[string]float64 `json:"seconds_by_workers"`
}

// Report is everything a suite run measured.
type Report struct {
	Date    string    `json:"date"`
	Machine Machine   `json:"machine"`
	Command string    `json:"command"`
	Cases   []Case    `json:"cases"`
	Scaling []Scaling `json:"scaling,omitempty"`
}

// Machine says where the figures were measured.
type Machine struct {
	Host    string `json:"host"`
	CPUs    int    `json:"cpus"`
	Go      string `json:"go"`
	QemuImg string `json:"qemu_img"`
	Kernel  string `json:"kernel"`
}

func (o *SuiteOptions) defaults() {
	if o.Size == 0 {
		o.Size = 8 << 30
	}
	if o.Small == 0 {
		o.Small = 2 << 30
	}
	if len(o.Fills) == 0 {
		o.Fills = []float64{0.1, 0.5, 0.9}
	}
	if o.Runs == 0 {
		o.Runs = 3
	}
	if len(o.Workers) == 0 {
		o.Workers = []int{1, 2, 4}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// source is a disk in one format, made from a generated RAW disk.
type source struct {
	format  string   // label: "qcow2", "qcow2 zlib", "vmdk streamOptimized", ...
	qemuFmt string   // qemu-img -O
	opts    []string // qemu-img options
	small   bool     // made from the small disk (compressed formats)
}

func sources() []source {
	return []source{
		{format: "qcow2", qemuFmt: "qcow2"},
		{format: "qcow2 zlib", qemuFmt: "qcow2", opts: []string{"-c", "-o", "compression_type=zlib"}, small: true},
		{format: "qcow2 zstd", qemuFmt: "qcow2", opts: []string{"-c", "-o", "compression_type=zstd"}, small: true},
		{format: "vmdk monolithicSparse", qemuFmt: "vmdk", opts: []string{"-o", "subformat=monolithicSparse"}},
		{format: "vmdk streamOptimized", qemuFmt: "vmdk", opts: []string{"-o", "subformat=streamOptimized"}, small: true},
		{format: "vhd dynamic", qemuFmt: "vpc", opts: []string{"-o", "subformat=dynamic"}},
		{format: "vhdx", qemuFmt: "vhdx"},
		{format: "vdi", qemuFmt: "vdi"},
		{format: "raw", qemuFmt: "raw"},
	}
}

// RunSuite generates the disks, converts them into every source format,
// times each case against its peer and writes the report.
func RunSuite(ctx context.Context, o SuiteOptions) (*Report, string, error) {
	o.defaults()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, "", err
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Command: commandLine()}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "bench: "+format+"\n", args...) }

	// The disks: one per fill at the full size, one small at 50%.
	disks := map[string]string{}
	gen := func(key string, size int64, fill float64) (string, error) {
		if p, ok := disks[key]; ok {
			return p, nil
		}
		p := filepath.Join(o.Dir, key+".raw")
		logf("generating %s (%s virtual, %.0f%% data)", p, gib(size), fill*100)
		if err := Generate(p, GenOptions{Size: size, Fill: fill, Seed: o.Seed}); err != nil {
			return "", err
		}
		disks[key] = p
		return p, nil
	}
	out := filepath.Join(o.Dir, "out.img")
	clean := func() { os.Remove(out); removeGlob(filepath.Join(o.Dir, ".out.img.*")) }
	ours := func(src string, extra ...string) []string {
		return append([]string{o.Convert, src, "-o", out, "--progress", "never"}, extra...)
	}
	measure := func(c Case, oursArgv, peerArgv []string) {
		if !o.want(c.Name) {
			return
		}
		logf("measuring %s", c.Name)
		clean()
		if _, err := Run(ctx, oursArgv); err != nil {
			c.Skipped = skipReason(err, o.Dir, oursArgv)
			rep.Cases = append(rep.Cases, c)
			logf("  skipped: %s", c.Skipped)
			return
		}
		rep.Cases = append(rep.Cases, timeCase(ctx, o.Runs, c, oursArgv, peerArgv, clean, logf))
		clean()
	}

	// Source formats -> RAW, and the scaling case.
	for _, s := range sources() {
		size, fill, key := o.Size, 0.5, "disk-50"
		if s.small {
			size, key = o.Small, "small-50"
		}
		fills := []float64{fill}
		if s.format == "qcow2" {
			fills = o.Fills
		}
		for _, f := range fills {
			k := key
			if f != 0.5 {
				k = fmt.Sprintf("disk-%02.0f", f*100)
			}
			if !o.want(fmt.Sprintf("%s -> raw (%.0f%%)", s.format, f*100)) && !o.want(fmt.Sprintf("%s -> qcow2 (%.0f%%)", s.format, f*100)) &&
				!(s.format == "qcow2 zlib" && o.want("raw -> qcow2 -c zlib (50%)")) {
				continue
			}
			raw, err := gen(k, size, f)
			if err != nil {
				return rep, "", err
			}
			src := raw
			if s.format != "raw" {
				src = filepath.Join(o.Dir, fmt.Sprintf("%s.%s", k, strings.ReplaceAll(s.format, " ", "-")))
				if _, err := os.Stat(src); err != nil {
					logf("making %s", src)
					args := append(append([]string{"convert", "-O", s.qemuFmt}, s.opts...), raw, src)
					if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
						return rep, "", fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
					}
				}
			}
			data := dataBytes(raw)
			base := Case{SourceFormat: s.format, VirtualSize: size, DataBytes: data, Fill: f, Peer: "qemu-img"}
			c := base
			c.Name, c.Output = fmt.Sprintf("%s -> raw (%.0f%%)", s.format, f*100), "raw"
			measure(c, ours(src, "-O", "raw"), peerSync("convert", "-O", "raw", src, out))
			if s.format == "qcow2" && f == 0.5 || s.format == "raw" || s.format == "vmdk monolithicSparse" {
				c = base
				c.Name, c.Output = fmt.Sprintf("%s -> qcow2 (%.0f%%)", s.format, f*100), "qcow2"
				measure(c, ours(src, "-O", "qcow2"), peerSync("convert", "-O", "qcow2", src, out))
			}
			if s.format == "qcow2 zlib" {
				small, err := gen("small-50", o.Small, 0.5)
				if err != nil {
					return rep, "", err
				}
				c = base
				c.SourceFormat = "raw"
				c.Name, c.Output = "raw -> qcow2 -c zlib (50%)", "qcow2 compressed"
				measure(c, ours(small, "-O", "qcow2", "-c"), peerSync("convert", "-c", "-O", "qcow2", small, out))
				sc := Scaling{Case: "qcow2 zlib -> raw (50%)", Seconds: map[string]float64{}}
				for _, w := range o.Workers {
					var runs []Sample
					for range o.Runs {
						clean()
						smp, err := Run(ctx, ours(src, "-O", "raw", "--workers", fmt.Sprint(w)))
						if err != nil {
							break
						}
						runs = append(runs, smp)
					}
					if len(runs) > 0 {
						sc.Seconds[fmt.Sprint(w)] = Summarize(runs).Seconds
					}
				}
				rep.Scaling = append(rep.Scaling, sc)
				clean()
			}
		}
	}
	if !o.Keep {
		// Tens of GiB of scratch disks: gone unless asked for.
		defer func() {
			for _, p := range disks {
				os.Remove(p)
			}
			removeGlob(filepath.Join(o.Dir, "*"))
		}()
	}
	if err := extL2Cases(ctx, &o, rep, gen, logf); err != nil {
		return rep, "", err
	}
	if o.Endpoint != "" && o.want("qcow2 -> raw -> s3 (10%)") {
		if err := uploadCases(ctx, &o, rep, gen, logf); err != nil {
			return rep, "", err
		}
	}
	if o.want("https vmdk streamOptimized -> raw (50%)") || o.want("https vhdx dynamic -> raw (50%)") {
		if err := remoteCases(ctx, &o, rep, gen, logf); err != nil {
			return rep, "", err
		}
	}
	if err := vsphereCases(ctx, &o, rep, gen, logf); err != nil {
		return rep, "", err
	}
	if err := linkCases(ctx, &o, rep, gen, logf); err != nil {
		return rep, "", err
	}
	dir, err := rep.Write(o.Out)
	return rep, dir, err
}

// timeCase interleaves runs of ours and the peer and fills c with the
// medians and the ratio, or with why it was skipped.
func timeCase(ctx context.Context, runs int, c Case, ours, peer []string, prepare func(), logf func(string, ...any)) Case {
	os_, ps, err := Interleave(ctx, runs, ours, peer, prepare)
	if err != nil {
		c.Skipped = skipReason(err, "", ours, peer)
		logf("  skipped: %s", c.Skipped)
		return c
	}
	c.Ours, c.Theirs = Summarize(os_), Summarize(ps)
	c.Ratio = Ratio(c.Ours.Seconds, c.Theirs.Seconds)
	c.RatioMin, c.RatioMax = RatioSpread(c.Ours.Runs, c.Theirs.Runs)
	logf("  ours %.2fs, %s %.2fs: %.2fx", c.Ours.Seconds, c.Peer, c.Theirs.Seconds, c.Ratio)
	return c
}

// uploadCases time convert's upload against qemu-img convert followed by
// aws s3 cp, to the same server, with the same part size on both sides.
func uploadCases(ctx context.Context, o *SuiteOptions, rep *Report, gen func(string, int64, float64) (string, error), logf func(string, ...any)) error {
	aws := o.AWS
	if aws == "" {
		aws = "/usr/bin/aws"
	}
	if _, err := exec.LookPath(aws); err != nil {
		logf("no %s: skipping the upload cases (apt-get install awscli)", aws)
		return nil
	}
	// versitygw's posix backend keeps an upload's part list in an extended
	// attribute that overflows past a few hundred parts: 64 MiB parts.
	const part = "64M"
	cfg := filepath.Join(o.Dir, "aws-config")
	if err := os.WriteFile(cfg, []byte("[default]\ns3 =\n  multipart_chunksize = 64MB\n  multipart_threshold = 64MB\n  max_concurrent_requests = 8\n"), 0o644); err != nil {
		return err
	}
	os.Setenv("AWS_CONFIG_FILE", cfg)
	bucket := fmt.Sprintf("bench-%d", time.Now().UnixNano()%1e9)
	if out, err := exec.CommandContext(ctx, aws, "--endpoint-url", o.Endpoint, "s3", "mb", "s3://"+bucket).CombinedOutput(); err != nil {
		return fmt.Errorf("aws s3 mb: %v: %s", err, out)
	}
	// The small disk: versitygw writes server-side copies of zeros to its
	// disk for real, which makes large sparse uploads slow on the server's
	// side alone and would take the default suite past 20 minutes.
	raw, err := gen("small-10", o.Small, 0.1)
	if err != nil {
		return err
	}
	src := filepath.Join(o.Dir, "small-10.qcow2")
	if _, err := os.Stat(src); err != nil {
		if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "qcow2", raw, src).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img: %v: %s", err, out)
		}
	}
	tmp := filepath.Join(o.Dir, "peer.out")
	for _, format := range []string{"raw", "qcow2"} {
		c := Case{Name: fmt.Sprintf("qcow2 -> %s -> s3 (10%%)", format), SourceFormat: "qcow2", Output: format + " upload",
			Peer: "qemu-img + aws s3 cp", VirtualSize: o.Small, DataBytes: dataBytes(raw), Fill: 0.1}
		ours := []string{o.Convert, src, "-O", format, "-o", "s3://" + bucket + "/ours." + format, "--endpoint", o.Endpoint,
			"--part-size", part, "--progress", "never", "--check", "off"}
		peer := []string{"sh", "-c", fmt.Sprintf("qemu-img convert -O %s %q %q && %q --endpoint-url %q s3 cp %q s3://%s/peer.%s --only-show-errors",
			format, src, tmp, aws, o.Endpoint, tmp, bucket, format)}
		logf("measuring %s", c.Name)
		rep.Cases = append(rep.Cases, timeCase(ctx, o.Runs, c, ours, peer, func() { os.Remove(tmp) }, logf))
	}
	os.Remove(tmp)
	return nil
}

// peerSync runs qemu-img with args, then syncs its output (the last
// argument). qemu-img convert exits with the output still in the page cache
// (its default cache mode for the target is unsafe: no flush); convert
// fsyncs before it renames its output into place. Both times end with the
// data on disk.
func peerSync(args ...string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return []string{"sh", "-c", "qemu-img " + strings.Join(q, " ") + " && sync " + q[len(q)-1]}
}

// commandLine is how this run was started, with go run's temporary binary
// named by the command that makes it.
func commandLine() string {
	args := append([]string(nil), os.Args...)
	for i, a := range args[min(1, len(args)):] {
		if a == "" || strings.IndexFunc(a, shellSpecial) >= 0 {
			args[i+1] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'" // as a shell reads it: --links ''
		}
	}
	if len(args) > 0 && strings.Contains(args[0], "go-build") {
		args[0] = "go run ./bench/cmd/benchsuite"
	}
	return strings.Join(args, " ")
}

// shellSpecial reports whether a shell would read r as more than itself.
func shellSpecial(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./:=,@+-%", r))
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	m.Host, _ = os.Hostname()
	if out, err := exec.Command("qemu-img", "--version").Output(); err == nil {
		m.QemuImg = firstLine(string(out))
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

// dataBytes counts the non-zero MiBs of a RAW disk (the data a converter
// must move), using the file's holes to skip most of it.
func dataBytes(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	buf := make([]byte, mib)
	var n int64
	for off := int64(0); ; off += mib {
		k, err := f.ReadAt(buf, off)
		for _, b := range buf[:k] {
			if b != 0 {
				n += int64(k)
				break
			}
		}
		if err != nil {
			return n
		}
	}
}

func removeGlob(pattern string) {
	m, _ := filepath.Glob(pattern)
	for _, p := range m {
		os.Remove(p)
	}
}

// skipReason is why a case was skipped, for the tables: the first line of
// err without the command line Run puts in front (any of argvs), and with
// the scratch folder dir named DIR: no temporary paths in the tables.
func skipReason(err error, dir string, argvs ...[]string) string {
	msg := firstLine(err.Error())
	for _, argv := range argvs {
		if rest, ok := strings.CutPrefix(msg, strings.Join(argv, " ")+": "); ok {
			msg = filepath.Base(argv[0]) + ": " + rest
			break
		}
	}
	if dir != "" {
		msg = strings.ReplaceAll(msg, dir, "DIR")
	}
	return msg
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
