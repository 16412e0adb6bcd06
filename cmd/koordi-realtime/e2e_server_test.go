package main

// The koordi-realtime binary as the tests run it: built once and started as
// a subprocess (serve, dev, tail) where signals, exit status and restarts on
// the same port are what is tested; run in-process (migrate, setup, token,
// the tail oracle) where only its output matters.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testSecret is the JWT_SECRET of every server the tests start and of every
// token they mint.
const testSecret = "e2e-secret-that-is-long-enough-0123456789"

// waitLimit bounds every wait for a condition; generous, because other
// packages' tests share the two cores.
const waitLimit = 45 * time.Second

var (
	binOnce sync.Once
	binPath string
	binDir  string
	binErr  error
)

// binary builds koordi-realtime once for the tests that run it as a process.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "koordi-bin-")
		if err != nil {
			binErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "koordi-realtime")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// removeBinary deletes what binary built; TestMain runs it after the tests.
func removeBinary() error {
	if binDir == "" {
		return nil
	}
	return os.RemoveAll(binDir)
}

// proc is one run of the binary as a subprocess. One still running when its
// test ends is killed, so no test leaves a process (or its replication
// connection) to the next; a failed test shows the end of its output.
type proc struct {
	t      *testing.T
	name   string // in failure messages
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed once the process has exited and err is set
	err    error
}

func startProc(t *testing.T, name, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			if out := p.stdout.String(); out != "" {
				t.Logf("%s stdout (last lines):\n%s", name, lastLines(out, 40))
			}
			t.Logf("%s stderr (last lines):\n%s", name, lastLines(p.stderr.String(), 60))
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill ends the process with SIGKILL: no goodbye, nothing flushed or
// confirmed, as in a crash.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	<-p.done
}

// signal sends sig and returns the exit error (nil for status 0) and how
// long the process took to exit; a process still running after limit fails
// the test.
func (p *proc) signal(sig os.Signal, limit time.Duration) (error, time.Duration) {
	p.t.Helper()
	begin := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err, time.Since(begin)
	case <-time.After(limit):
		p.t.Fatalf("%s still running %s after %v\n%s", p.name, limit, sig, lastLines(p.stderr.String(), 40))
		return nil, 0
	}
}

// waitReady waits until the process answers /readyz with 200 at base(),
// which is "" while the process has not said where it listens.
func (p *proc) waitReady(base func() string) {
	p.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if b := base(); b != "" {
			if code, _, err := fetch(b + "/readyz"); err == nil && code == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, lastLines(p.stderr.String(), 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %s\n%s", p.name, waitLimit, lastLines(p.stderr.String(), 40))
		}
	}
}

// testServer is `koordi-realtime serve` as a subprocess on an address fixed
// for the test, so that the successor started after a kill or a stop is
// where the sockets reconnect to by themselves.
type testServer struct {
	t    *testing.T
	addr string
	env  []string
	proc *proc // the current run
	runs int
}

// startServer starts serve on db with its own slot and waits until it is
// ready. vars add to or override its environment.
func startServer(t *testing.T, db *testDB, vars ...string) *testServer {
	t.Helper()
	s := &testServer{t: t, addr: freeAddr(t)}
	slot := db.slot("serve")
	s.env = append(os.Environ(),
		"DATABASE_URL="+db.url,
		"JWT_SECRET="+testSecret,
		"LISTEN_ADDR="+s.addr,
		"SLOT_NAME="+slot,
		"FRONTEND_URL=http://localhost:5173",
		"LOG_LEVEL=debug",
		"SHUTDOWN_GRACE=10s",
	)
	s.env = append(s.env, vars...)
	// Registered before any run's cleanup, so it runs after every run is gone.
	t.Cleanup(func() { db.dropSlot(slot) })
	s.start()
	return s
}

// start runs serve (again, after a kill or stop) and waits for /readyz.
func (s *testServer) start() {
	s.t.Helper()
	s.runs++
	s.proc = startProc(s.t, fmt.Sprintf("serve run %d", s.runs), "", s.env, "serve")
	s.proc.waitReady(s.url)
}

// url is what clients connect to.
func (s *testServer) url() string { return "http://" + s.addr }

// log is the current run's stderr.
func (s *testServer) log() string { return s.proc.stderr.String() }

// waitLog waits until the server's log holds line.
func (s *testServer) waitLog(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(s.log(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %s", line, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *testServer) kill() {
	s.t.Helper()
	s.proc.kill()
}

// stop is a deploy's SIGTERM; see proc.signal.
func (s *testServer) stop(limit time.Duration) (error, time.Duration) {
	s.t.Helper()
	return s.proc.signal(syscall.SIGTERM, limit)
}

// freeAddr reserves a loopback port for a server that is restarted on it.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// httpClient opens a connection per request, so that no idle connection
// outlives the server it went to (goleak checks the package at the end).
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func fetch(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, err := fetch(url)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// runCommand runs a short koordi-realtime command (migrate, setup, token)
// in-process, so the tests prepare a database and mint tokens the way an
// operator does; it fails the test unless the command exits 0, and returns
// its stdout.
func runCommand(t *testing.T, vars map[string]string, args ...string) string {
	t.Helper()
	var stdout, stderr syncBuffer
	if code := run(context.Background(), envOf(vars, &stdout, &stderr), args); code != 0 {
		t.Fatalf("koordi-realtime %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// inProcess is a long-running koordi-realtime command (tail) run in this
// process until stop, which is what SIGINT does in main. It is stopped at
// the end of the test at the latest.
type inProcess struct {
	stdout syncBuffer
	stderr syncBuffer
	cancel context.CancelFunc
	code   chan int
	once   sync.Once
	exit   int
}

func startInProcess(t *testing.T, vars map[string]string, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{cancel: cancel, code: make(chan int, 1)}
	go func() { p.code <- run(ctx, envOf(vars, &p.stdout, &p.stderr), args) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the command and returns its exit status.
func (p *inProcess) stop() int {
	p.once.Do(func() {
		p.cancel()
		p.exit = <-p.code
	})
	return p.exit
}

// waitLogged waits for msg in a log, for the states a process announces
// only there ("streaming started").
func waitLogged(t *testing.T, log *syncBuffer, msg string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%q logged", msg), func() bool { return strings.Contains(log.String(), msg) })
}

// waitStreaming waits until a process streams: "streaming started" on a slot
// it created, "streaming resumed" on one it found.
func waitStreaming(t *testing.T, log *syncBuffer) {
	t.Helper()
	waitUntil(t, "streaming started or resumed", func() bool {
		s := log.String()
		return strings.Contains(s, "streaming started") || strings.Contains(s, "streaming resumed")
	})
}
