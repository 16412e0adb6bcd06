// Package natsserver finds and runs the nats-server this project pins — a Go
// tool dependency in go.mod (`go tool nats-server`) — with JetStream, on
// 127.0.0.1, for the tests of several nodes and for
// `koordi-realtime dev --nodes N`. The service itself only connects to a
// NATS_URL; it never starts a server.
//
// The binary is, in this order: $NATS_SERVER; bin/nats-server next to the
// running binary (make build writes it); one built once from the module
// into the user's cache (needs the go command and the module's sources, as
// in a checkout); nats-server on PATH if it is 2.10 or newer (Debian ships
// 2.9, too old for the API the service uses).
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version is the nats-server version go.mod pins.
const Version = "v2.15.2"

// ErrNotFound means no usable nats-server was found or built.
var ErrNotFound = errors.New("nats-server 2.10+ not found (set NATS_SERVER, run make build, or install it)")

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a nats-server to run: $NATS_SERVER, else one
// next to the running executable (make build puts it in bin/), else the
// pinned version built once into the user's cache (built from this
// module's checkout when the working directory is in one), else a
// nats-server 2.10+ on PATH.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = find() })
	return binPath, binErr
}

func find() (string, error) {
	if p := os.Getenv("NATS_SERVER"); p != "" {
		return p, nil
	}
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "nats-server"); usable(p) {
			return p, nil
		}
	}
	if p := cached(); usable(p) {
		return p, nil
	}
	if root := moduleRoot(); root != "" {
		if p, err := build(root); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("nats-server"); err == nil && usable(p) {
		return p, nil
	}
	return "", ErrNotFound
}

var versionRE = regexp.MustCompile(`v?(\d+)\.(\d+)\.`)

// usable reports whether p runs and is 2.10 or newer.
func usable(p string) bool {
	out, err := exec.Command(p, "--version").Output()
	if err != nil {
		return false
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 2 || major == 2 && minor >= 10
}

// moduleRoot is the checkout of this module around the working directory.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/koordi/koordi-realtime") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// cached is where build puts the pinned nats-server.
func cached() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return filepath.Join(cache, "koordi-realtime", "nats-server-"+Version)
}

// build compiles the pinned nats-server once into the user's cache.
func build(root string) (string, error) {
	out := cached()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %w: %s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// Config says how to run a server. The zero value is a temporary server on a
// free port.
type Config struct {
	Dir  string // JetStream store and log; empty: a new temporary directory, removed by Stop
	Port int    // 0: a free one
}

// Server is a running nats-server.
type Server struct {
	bin, dir string
	temp     bool
	port     int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs a server and waits until it accepts connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: cfg.Dir, port: cfg.Port}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "koordi-nats-"); err != nil {
			return nil, err
		}
		s.temp = true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if s.port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	if err := s.start(ctx); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	log, err := os.OpenFile(filepath.Join(s.dir, "nats-server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.StoreDir())
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start nats-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(s.dir, "nats-server.log"))
			return fmt.Errorf("nats-server exited: %s", lastLines(string(b), 5))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("nats-server did not start listening in 30s")
		}
	}
}

// Addr is host:port; URL the nats:// URL.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }
func (s *Server) URL() string  { return "nats://" + s.Addr() }

// PID is the running server's process id; 0 before it started.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// StoreDir is the JetStream store directory (-sd).
func (s *Server) StoreDir() string { return filepath.Join(s.dir, "js") }

// Kill ends the server with SIGKILL and waits for it.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts a killed or stopped server again on the same port and
// store.
func (s *Server) Restart(ctx context.Context) error { return s.start(ctx) }

// Stop ends the server (SIGTERM, then SIGKILL after 10 s) and removes a
// temporary directory.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.temp {
		_ = os.RemoveAll(s.dir)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
