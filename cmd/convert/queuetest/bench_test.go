package queuetest

import (
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"vmimport/internal/natstest"
	"vmimport/internal/s3test"
	"vmimport/internal/testkit"
)

// BenchmarkQueueVsLocal: twelve small disks (32 MiB, half data) uploaded to
// the local S3 server, by three worker processes on this machine through
// the queue (from submission to the last disk's end, `convert batch
// --queue --wait`), and by the local batch with --jobs 3; rounds
// interleaved, the median of each reported, and their ratio (queue/local).
//
//	go test -run '^$' -bench QueueVsLocal -benchtime 1x ./cmd/convert/queuetest/
func BenchmarkQueueVsLocal(b *testing.B) {
	testkit.Need(b, "qemu-img")
	s3test.Need(b, srv)
	nats := natstest.Start(b)
	e := &env{nats: nats, bucket: srv.Bucket(b), home: b.TempDir(), dir: b.TempDir(), workers: map[string]*workerProc{}}
	e.proxy = s3test.NewProxy(srv)
	defer e.proxy.Close()
	var srcs []string
	for i := range 12 {
		srcs = append(srcs, randomDisk(b, filepath.Join(e.dir, fmt.Sprintf("d%d.raw", i)), 32*mib, 2*mib, 4*mib))
	}
	run := func(args ...string) time.Duration {
		start := time.Now()
		cmd := e.command(args...)
		cmd.Env = append(srv.Env(e.home), "AWS_ENDPOINT_URL_S3="+srv.Endpoint)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", args, err, out)
		}
		return time.Since(start)
	}
	manifest := func(round string) string {
		var lines []string
		for i, src := range srcs {
			lines = append(lines, jsonLine("source", src, "output", fmt.Sprintf("s3://%s/%s/d%d.raw", e.bucket, round, i)))
		}
		return writeManifest(b, filepath.Join(e.dir, round+".jsonl"), lines)
	}
	for i := range 3 {
		name := fmt.Sprintf("w%d", i)
		cmd := e.command("worker", "--queue", nats.URL, "--name", name, "--jobs", "1", "--memory", "256M", "--allow-source", e.dir, "--allow-output", "s3://"+e.bucket+"/")
		cmd.Env = append(srv.Env(e.home), "AWS_ENDPOINT_URL_S3="+srv.Endpoint)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	}
	var local, queued []time.Duration
	const rounds = 5
	b.ResetTimer()
	for r := range rounds {
		local = append(local, run("batch", manifest(fmt.Sprintf("local%d", r)), "--jobs", "3", "--memory", "768M", "--no-state", "--check", "off", "--progress", "never"))
		queued = append(queued, run("batch", manifest(fmt.Sprintf("queue%d", r)), "--queue", nats.URL, "--wait", "--check", "off", "--progress", "never"))
	}
	b.StopTimer()
	slices.Sort(local)
	slices.Sort(queued)
	l, q := local[rounds/2], queued[rounds/2]
	b.ReportMetric(l.Seconds(), "local-s")
	b.ReportMetric(q.Seconds(), "queue-s")
	b.ReportMetric(q.Seconds()/l.Seconds(), "queue/local")
	b.Logf("12 disks of 32 MiB: local batch --jobs 3 %v (median of %d: %v), 3 queue workers %v (%v): ratio %.3f", l, rounds, local, q, queued, q.Seconds()/l.Seconds())
}
