// Package natstest gives tests a real NATS server with JetStream on the
// loopback interface: nats-server v2.15.2, as .ci/nats-server.sh installs
// it, or built here with go install into the user's cache folder when
// missing, so that `go test ./...` on a fresh machine runs the queue tests.
// Only tests import it. No traffic ever leaves 127.0.0.1.
package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the nats-server the tests run.
const Version = "v2.15.2"

// Server is a running nats-server with JetStream in a folder of its own.
type Server struct {
	URL  string // nats://127.0.0.1:PORT
	Port int
	// Dir holds JetStream's file storage: a restart on the same Dir finds
	// the streams and buckets again.
	Dir  string
	bin  string
	args []string
	cmd  *exec.Cmd
	// exited is closed when cmd has exited.
	exited chan struct{}
	log    string
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// cacheDir is where .ci/nats-server.sh installs the server (and where
// Binary builds it).
func cacheDir() string {
	if c := os.Getenv("NATS_SERVER_CACHE"); c != "" {
		return c
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "vmimport", "nats-server-"+Version)
}

// Binary finds nats-server: $NATS_SERVER_BIN, the cache folder, PATH; else
// it builds it into the cache folder with go install (about a minute).
func Binary() (string, error) {
	buildOnce.Do(func() { buildBin, buildErr = binary() })
	return buildBin, buildErr
}

func binary() (string, error) {
	if b := os.Getenv("NATS_SERVER_BIN"); b != "" {
		return b, nil
	}
	cache := cacheDir()
	if cache != "" {
		if b := filepath.Join(cache, "nats-server"); isExec(b) {
			return b, nil
		}
	}
	if b, err := exec.LookPath("nats-server"); err == nil {
		return b, nil
	}
	if cache == "" {
		return "", fmt.Errorf("no nats-server and no cache folder to build it in")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no nats-server and no go to build it: %v", err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "natstest: building nats-server %s into %s (once)\n", Version, cache)
	cmd := exec.Command(goBin, "install", "github.com/nats-io/nats-server/v2@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+cache, "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install nats-server: %v\n%s", err, out)
	}
	return filepath.Join(cache, "nats-server"), nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start starts a server for one test, stopped at its end. Without a server
// the test skips, or fails under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartArgs(t)
}

// StartArgs is Start with more command-line arguments for the server
// (--user and --pass, --tls with --tlscert and --tlskey, ...).
func StartArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no nats-server: %v (.ci/run installs it with .ci/nats-server.sh)", err)
		}
		t.Skipf("no nats-server: %v", err)
	}
	s := &Server{bin: bin, Dir: t.TempDir(), args: args}
	s.log = filepath.Join(s.Dir, "nats-server.log")
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Port = port
		s.URL = fmt.Sprintf("nats://127.0.0.1:%d", port)
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Kill)
			return s
		}
	}
	t.Fatalf("nats-server did not start: %v", lastErr)
	return nil
}

func (s *Server) start() error {
	log, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(s.bin, append([]string{"-a", "127.0.0.1", "-p", fmt.Sprint(s.Port), "-js", "-sd", filepath.Join(s.Dir, "js"),
		"--server_name", "test"}, s.args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.cmd = nil
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("nats-server exited: %s", lastLines(b))
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), 200*time.Millisecond); err == nil {
			c.Close()
			if b, _ := os.ReadFile(s.log); containsReady(b) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-exited
	s.cmd = nil
	return fmt.Errorf("nats-server not ready on port %d within 20s", s.Port)
}

// containsReady tells whether the log says the server is ready (after a
// restart it holds an earlier run's lines too: look at the last start).
func containsReady(b []byte) bool {
	last := lastIndex(b, "Starting nats-server")
	return last >= 0 && lastIndex(b[last:], "Server is ready") >= 0
}

func lastIndex(b []byte, s string) int {
	for i := len(b) - len(s); i >= 0; i-- {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func lastLines(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Kill stops the server at once (SIGKILL), as a crash or power loss of its
// process would; its storage stays for Restart.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port and storage.
func (s *Server) Restart(ctx context.Context) error {
	var err error
	for ctx.Err() == nil {
		if err = s.start(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond) // the port may still be held
	}
	return fmt.Errorf("restarting nats-server: %v", err)
}

// Log is the server's log so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return lastLines(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
