package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Fetched is what a remote case's tools fetched from the web server in
// one run each: bytes of response bodies, and requests.
type Fetched struct {
	Bytes    int64 `json:"bytes"`
	Requests int64 `json:"requests"`
}

// servedFiles is a web server on loopback for the remote cases: Go's
// FileServer (Range, If-Range, keep-alive) over the scratch folder, with
// an nginx-like ETag, counting what it sends.
type servedFiles struct {
	url      string
	bytes    atomic.Int64
	requests atomic.Int64
	srv      *http.Server
}

func serveFiles(dir string) (*servedFiles, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &servedFiles{url: "http://" + l.Addr().String()}
	fsrv := http.FileServer(http.Dir(dir))
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(r.URL.Path))); err == nil {
			w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
		}
		fsrv.ServeHTTP(countingWriter{w, &s.bytes}, r)
	})}
	go s.srv.Serve(l)
	return s, nil
}

func (s *servedFiles) reset() (Fetched, func() Fetched) {
	b0, r0 := s.bytes.Load(), s.requests.Load()
	return Fetched{}, func() Fetched { return Fetched{Bytes: s.bytes.Load() - b0, Requests: s.requests.Load() - r0} }
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// remoteCases time convert reading an image over HTTP from loopback
// against the two ways qemu-img does it: its curl driver reading the URL
// (qemu-block-extra), and nbdkit's curl plugin under qemu-img convert
// (KubeVirt CDI's import pipeline). Both write a RAW file and sync it, as
// convert fsyncs its output.
func remoteCases(ctx context.Context, o *SuiteOptions, rep *Report, gen func(string, int64, float64) (string, error), logf func(string, ...any)) error {
	raw, err := gen("small-50", o.Small, 0.5)
	if err != nil {
		return err
	}
	web := filepath.Join(o.Dir, "web")
	if err := os.MkdirAll(web, 0o755); err != nil {
		return err
	}
	srv, err := serveFiles(web)
	if err != nil {
		return err
	}
	defer srv.srv.Close()
	out := filepath.Join(o.Dir, "out.img")
	clean := func() { os.Remove(out); removeGlob(filepath.Join(o.Dir, ".out.img.*")) }
	qemuCurl := qemuHasCurl(ctx, srv.url)
	_, nbdErr := exec.LookPath("nbdkit")
	for _, s := range []struct {
		label, qemuFmt, file string
		opts                 []string
	}{
		{"vmdk streamOptimized", "vmdk", "small-50-stream.vmdk", []string{"-o", "subformat=streamOptimized"}},
		{"vhdx dynamic", "vhdx", "small-50.vhdx", nil},
	} {
		src := filepath.Join(web, s.file)
		if _, err := os.Stat(src); err != nil {
			logf("making %s", src)
			args := append(append([]string{"convert", "-O", s.qemuFmt}, s.opts...), raw, src)
			if b, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, b)
			}
		}
		if !o.Keep {
			defer os.Remove(src)
		}
		url := srv.url + "/" + s.file
		fi, _ := os.Stat(src)
		ours := []string{o.Convert, url, "-o", out, "--progress", "never"}
		peers := []struct {
			name string
			argv []string
			skip string
		}{
			{"qemu-img (curl driver)", peerSync("convert", "-f", s.qemuFmt, "-O", "raw", url, out), qemuCurl},
			{"nbdkit curl + qemu-img (CDI)", []string{"sh", "-c", fmt.Sprintf(
				"nbdkit -r -U - --filter=readahead curl url=%s --run 'qemu-img convert -f %s -O raw \"$uri\" %s' && sync %s",
				shellQuote(url), s.qemuFmt, out, shellQuote(out))}, ""},
		}
		if nbdErr != nil {
			peers[1].skip = "nbdkit is not installed (apt-get install nbdkit)"
		}
		if !o.want(fmt.Sprintf("https %s -> raw (50%%)", s.label)) {
			continue
		}
		// What each tool fetches, from one run each; a peer that takes
		// more than limit (20 times our time, at least 2 minutes) is
		// stopped and reported as such.
		fetched := map[string]Fetched{}
		_, took := srv.reset()
		clean()
		smp, err := Run(ctx, ours)
		if err != nil {
			return err
		}
		fetched["ours"] = took()
		limit := max(2*time.Minute, time.Duration(20*smp.Seconds*float64(time.Second)))
		for i, p := range peers {
			if p.skip != "" {
				continue
			}
			_, took := srv.reset()
			clean()
			pctx, cancel := context.WithTimeout(ctx, limit)
			_, err := Run(pctx, p.argv)
			timedOut := pctx.Err() == context.DeadlineExceeded
			cancel()
			switch {
			case timedOut:
				peers[i].skip = fmt.Sprintf("%s did not finish in %.0f s (convert: %.1f s) and was stopped; it had fetched %s of the %s file in %d requests",
					p.name, limit.Seconds(), smp.Seconds, gib(took().Bytes), gib(fi.Size()), took().Requests)
			case err != nil:
				peers[i].skip = firstLine(err.Error())
			default:
				fetched[p.name] = took()
			}
		}
		for _, p := range peers {
			if !o.want(fmt.Sprintf("https %s -> raw (50%%)", s.label)) {
				continue
			}
			c := Case{Name: fmt.Sprintf("https %s -> raw (50%%)", s.label), SourceFormat: s.label + " over HTTP", Output: "raw",
				Peer: p.name, VirtualSize: o.Small, DataBytes: dataBytes(raw), Fill: 0.5, FileBytes: fi.Size(),
				OursFetched: fetched["ours"], PeerFetched: fetched[p.name]}
			logf("measuring %s against %s (file %s; fetched: ours %s, peer %s)", c.Name, p.name, gib(fi.Size()), gib(c.OursFetched.Bytes), gib(c.PeerFetched.Bytes))
			if p.skip != "" {
				c.Skipped = p.skip
				rep.Cases = append(rep.Cases, c)
				logf("  skipped: %s", p.skip)
				continue
			}
			tctx, cancel := context.WithTimeout(ctx, time.Duration(2*o.Runs)*limit)
			rep.Cases = append(rep.Cases, timeCase(tctx, o.Runs, c, ours, p.argv, clean, logf))
			cancel()
		}
		clean()
	}
	return nil
}

// qemuHasCurl tells why qemu-img cannot read http:// URLs ("" when it
// can): its curl driver comes with Debian's qemu-block-extra.
func qemuHasCurl(ctx context.Context, base string) string {
	b, err := exec.CommandContext(ctx, "qemu-img", "info", base+"/no-such-file").CombinedOutput()
	if err != nil && strings.Contains(string(b), "Unknown protocol") {
		return "qemu-img has no curl driver (apt-get install qemu-block-extra)"
	}
	return ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
