package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// extL2Fill is the fill of the extended-L2 cases' disk: --small (2 GiB by
// default) with about 400 MB of data, the shape of the image that once
// converted 14x (64 KiB clusters) and 150x (2 MiB) slower than qemu-img.
const extL2Fill = 0.2

// extL2Cases time QCOW2 images with extended L2 entries (qemu-img convert
// -o extended_l2=on: 32 subclusters a cluster) at 64 KiB and 2 MiB
// clusters, each against qemu-img on the same image and against convert on
// a plain QCOW2 of the same data and cluster size, interleaved in the same
// rounds: the second ratio is how much slower extended L2 entries make us.
func extL2Cases(ctx context.Context, o *SuiteOptions, rep *Report, gen func(string, int64, float64) (string, error), logf func(string, ...any)) error {
	name := func(cluster string, vsPlain bool) string {
		if vsPlain { // the chart's label: "convert: ... vs convert: plain ..."
			return fmt.Sprintf("convert: qcow2 extended-l2 %s -> raw (%.0f%%)", cluster, extL2Fill*100)
		}
		return fmt.Sprintf("qcow2 extended-l2 %s -> raw (%.0f%%)", cluster, extL2Fill*100)
	}
	var want []string // cluster sizes
	for _, v := range []string{"64k", "2M"} {
		if o.want(name(v, false)) || o.want(name(v, true)) {
			want = append(want, v)
		}
	}
	if len(want) == 0 {
		return nil
	}
	key := fmt.Sprintf("small-%02.0f", extL2Fill*100)
	raw, err := gen(key, o.Small, extL2Fill)
	if err != nil {
		return err
	}
	data := dataBytes(raw)
	out := filepath.Join(o.Dir, "out.img")
	clean := func() { os.Remove(out); removeGlob(filepath.Join(o.Dir, ".out.img.*")) }
	convert := func(src string) []string {
		return []string{o.Convert, src, "-O", "raw", "-o", out, "--progress", "never"}
	}
	for _, v := range want {
		ext := filepath.Join(o.Dir, fmt.Sprintf("%s-extl2-%s.qcow2", key, v))
		plain := filepath.Join(o.Dir, fmt.Sprintf("%s-%s.qcow2", key, v))
		for p, opts := range map[string]string{ext: "extended_l2=on,cluster_size=" + v, plain: "cluster_size=" + v} {
			if _, err := os.Stat(p); err == nil {
				continue
			}
			logf("making %s", p)
			args := []string{"convert", "-O", "qcow2", "-o", opts, raw, p}
			if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		base := Case{SourceFormat: "qcow2 extended-l2 " + v, Output: "raw", VirtualSize: o.Small, DataBytes: data, Fill: extL2Fill}
		if c := base; o.want(name(v, false)) {
			c.Name, c.Peer = name(v, false), "qemu-img"
			logf("measuring %s", c.Name)
			rep.Cases = append(rep.Cases, timeCase(ctx, o.Runs, c, convert(ext), peerSync("convert", "-O", "raw", ext, out), clean, logf))
		}
		if c := base; o.want(name(v, true)) {
			c.Name, c.Peer = name(v, true), "convert: plain qcow2 "+v+" -> raw"
			logf("measuring %s", c.Name)
			rep.Cases = append(rep.Cases, timeCase(ctx, o.Runs, c, convert(ext), convert(plain), clean, logf))
		}
		clean()
	}
	return nil
}
