package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"vmimport/batch"
	"vmimport/observe"
)

// observeOptions are the flags of the commands that run a fleet's disks
// (convert worker, convert batch): metrics and machine-readable logs.
type observeOptions struct {
	metricsAddr string
	logFormat   string
}

func (o *observeOptions) register(fs *pflag.FlagSet) {
	flagGroup(fs, groupObserve, func() {
		fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics, with /healthz and /readyz (:9090 on every interface; port 0 picks a free one, told on stderr)")
		fs.StringVar(&o.logFormat, "log-format", "text", "text: lines for people (bars on a terminal); json: one JSON record per event of a disk on stderr, for a log collector")
	})
}

func (o *observeOptions) check() error {
	switch o.logFormat {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("--log-format %q: use text or json", o.logFormat)
}

// telemetry is what observeOptions started: the observer the command
// hands its events to, and the metrics server.
type telemetry struct {
	obs  *observe.Observer
	m    *observe.Metrics // nil without --metrics-addr
	srv  *observe.Server
	log  *slog.Logger // nil unless --log-format json
	json bool
}

// start starts the metrics server (with --metrics-addr) and the JSON log
// (with --log-format json) of command; ready tells /readyz (nil: always
// ready). name names this process in the records.
func (o *observeOptions) start(command string, stderr io.Writer, name string, ready func() error) (*telemetry, error) {
	if err := o.check(); err != nil {
		return nil, usageError{err}
	}
	t := &telemetry{json: o.logFormat == "json"}
	if t.json {
		t.log = slog.New(slog.NewJSONHandler(stderr, nil))
	}
	if o.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		t.m = observe.NewMetrics(reg, readBuildInfo().Version)
		srv, err := observe.Serve(o.metricsAddr, reg, ready)
		if err != nil {
			return nil, usageError{err}
		}
		t.srv = srv
		url := "http://" + srv.Addr() + "/metrics"
		if t.json {
			t.log.Info("metrics", slog.String("url", url))
		} else {
			fmt.Fprintf(stderr, "%s: metrics on %s\n", command, url)
		}
	}
	t.obs = observe.New(t.m, t.log, name)
	return t, nil
}

// told ends a command under --log-format json: its error, if any, is the
// last record, and main prints no line of text after the records.
func (t *telemetry) told(ctx context.Context, err error) error {
	if !t.json || err == nil {
		return err
	}
	code := exitCode(ctx, err)
	if code == exitOK {
		return err
	}
	t.log.Error("exit", slog.Int("code", code), slog.String("error", message(ctx, code, err)))
	return loggedError{err}
}

// loggedError is an error a JSON record told already.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// logged tells an error a JSON record told already: main prints no line.
func logged(err error) bool {
	var l loggedError
	return errors.As(err, &l)
}

// close stops the metrics server.
func (t *telemetry) close() {
	if t.srv != nil {
		t.srv.Close()
	}
}

// textOnly is where a batch writes its lines for people: stderr, or
// nowhere under --log-format json (the records say it all, and stderr
// holds nothing else); no bars then either.
func (bo *batchOptions) textOnly(t *telemetry, stderr io.Writer) io.Writer {
	if !t.json {
		return stderr
	}
	bo.progress = "never"
	return io.Discard
}

// summary logs a batch's totals as its last record.
func (t *telemetry) summary(sum batch.Summary) {
	t.obs.Log(slog.LevelInfo, "summary", slog.Int("disks", sum.Disks), slog.Int("done", sum.Done), slog.Int("skipped", sum.Skipped),
		slog.Int("failed", sum.Failed), slog.Int("cancelled", sum.Cancelled), slog.Float64("seconds", sum.Seconds), slog.Int64("bytes", sum.Bytes))
}

// hostName names a batch in its records.
func hostName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
