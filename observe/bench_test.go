package observe_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"

	"vmimport/batch"
	"vmimport/internal/objstore"
	"vmimport/internal/promtest"
	"vmimport/job"
	"vmimport/observe"
	"vmimport/upload"
)

// BenchmarkObserved converts one disk (256 MiB, half of it data, in 1 MiB
// runs) into a file and into an upload (the memory store), as a batch
// does, with nothing observing it (off), with metrics served and scraped
// (metrics, as --metrics-addr) and with metrics and JSON records (json, as
// --log-format json too). Metrics cost nothing measurable when the three
// are within noise of each other:
//
//	go test -run '^$' -bench Observed -count 6 ./observe/ | tee /tmp/b; benchstat -col /mode /tmp/b
func BenchmarkObserved(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "disk.raw")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range 256 {
		if i%2 == 0 {
			rand.Read(buf)
			if _, err := f.WriteAt(buf, int64(i)<<20); err != nil {
				b.Fatal(err)
			}
		}
	}
	f.Truncate(256 << 20)
	f.Close()
	for _, out := range []string{"file", "upload"} {
		for _, mode := range []string{"off", "metrics", "json"} {
			b.Run(fmt.Sprintf("out=%s/mode=%s", out, mode), func(b *testing.B) {
				m := &objstore.Memory{}
				m.Bucket("mem-bucket")
				clients := upload.NewClients(upload.Config{Backend: m.Bucket, Credentials: credentials.NewStaticCredentialsProvider("k", "s", "")})
				defer clients.Close()
				budget := job.NewBudget(256 << 20)
				o := batch.Options{Jobs: 1, Budget: budget, Clients: clients}
				if mode != "off" {
					reg := prometheus.NewRegistry()
					metrics := observe.NewMetrics(reg, "bench")
					metrics.WatchBudget(budget)
					srv, err := observe.Serve("127.0.0.1:0", reg, nil)
					if err != nil {
						b.Fatal(err)
					}
					defer srv.Close()
					var log *slog.Logger
					if mode == "json" {
						log = slog.New(slog.NewJSONHandler(io.Discard, nil))
					}
					o.Events = observe.New(metrics, log, "bench").Batch
					defer func() {
						// The metrics were there to be read.
						if sc, err := promtest.Get(context.Background(), "http://"+srv.Addr()+"/metrics"); err != nil || sc.Value("convert_disks_total", "result", "done") != float64(b.N) {
							b.Errorf("scrape: %v", err)
						}
					}()
				}
				b.SetBytes(256 << 20)
				for i := 0; b.Loop(); i++ {
					spec := job.Spec{Source: src, Format: "raw", Check: "off"}
					if out == "file" {
						spec.Output = filepath.Join(dir, fmt.Sprintf("out-%s-%d.raw", mode, i))
					} else {
						spec.Output = fmt.Sprintf("s3://mem-bucket/%s-%d.raw", mode, i)
						spec.Upload = job.UploadSpec{Store: job.Store{Endpoint: "http://127.0.0.1:9", Region: "us-east-1"}}
					}
					_, sum, err := batch.Run(context.Background(), []batch.Item{{Line: 1, Spec: spec}}, o)
					if err != nil || sum.Done != 1 {
						b.Fatalf("%v %+v", err, sum)
					}
					if out == "file" {
						os.Remove(spec.Output)
					}
				}
			})
		}
	}
}

// BenchmarkEvent is what the observer spends on one event of a running
// disk (metrics on, records on or off): a conversion tells at most ten
// Progress events a second and one PartStored per part (5 MiB or more),
// so this times that rate is the whole cost of observing it.
func BenchmarkEvent(b *testing.B) {
	spec := job.Spec{Source: "/srv/d.raw", Output: "s3://b/d.raw"}
	it := &batch.Item{Line: 1, Spec: spec}
	for _, mode := range []string{"metrics", "json"} {
		reg := prometheus.NewRegistry()
		var log *slog.Logger
		if mode == "json" {
			log = slog.New(slog.NewJSONHandler(io.Discard, nil))
		}
		obs := observe.New(observe.NewMetrics(reg, "bench"), log, "bench")
		obs.Batch(batch.Event{Kind: batch.DiskStarted, Item: it})
		obs.Batch(batch.Event{Kind: batch.DiskEvent, Item: it, Job: job.Event{Kind: job.PhaseChanged, Phase: job.Reading}})
		b.Run("progress/"+mode, func(b *testing.B) {
			var st job.Stats
			for b.Loop() {
				st.Read += 1 << 20
				st.Detected += 1 << 19
				obs.Batch(batch.Event{Kind: batch.DiskEvent, Item: it, Job: job.Event{Kind: job.Progress, Stats: st, Written: st.Read}})
			}
		})
		b.Run("part/"+mode, func(b *testing.B) {
			for b.Loop() {
				obs.Batch(batch.Event{Kind: batch.DiskEvent, Item: it, Job: job.Event{Kind: job.PartStored, Part: &upload.PartStored{Num: 2, Bytes: 8 << 20, How: upload.PartSent}}})
			}
		})
		b.Run("phase/"+mode, func(b *testing.B) {
			for b.Loop() {
				obs.Batch(batch.Event{Kind: batch.DiskEvent, Item: it, Job: job.Event{Kind: job.PhaseChanged, Phase: job.UploadingParts}})
			}
		})
	}
}
