package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
)

// devProc is a `koordi-realtime dev` subprocess.
type devProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdout  syncBuffer
	stderr  syncBuffer
	done    chan struct{}
	waitErr error
	base    string // http://host:port, from the banner
}

// devEnv is the environment minus the settings dev must choose itself.
func devEnv(vars ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "DATABASE_URL", "JWT_SECRET", "LISTEN_ADDR", "SLOT_NAME", "KOORDI_DEV_DIR":
		default:
			env = append(env, kv)
		}
	}
	return append(env, vars...)
}

var devURLRe = regexp.MustCompile(`(?m)^  inspector   (http://\S+)/$`)

// startDev runs dev in dir with env and waits until its banner is printed
// and /readyz answers 200.
func startDev(t *testing.T, dir string, env []string, args ...string) *devProc {
	t.Helper()
	p := &devProc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), append([]string{"dev"}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = env
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			// A failed test still stops dev the way a user does, so its
			// PostgreSQL goes too.
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", e2eLastLines(p.stdout.String(), 40), e2eLastLines(p.stderr.String(), 60))
		}
	})
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(e2eWait)
	for {
		if p.base == "" {
			if m := devURLRe.FindStringSubmatch(p.stdout.String()); m != nil {
				p.base = m[1]
			}
		}
		if p.base != "" {
			if resp, err := client.Get(p.base + "/readyz"); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p
				}
			}
		}
		select {
		case <-p.done:
			t.Fatalf("dev exited before it was ready: %v\n%s\n%s", p.waitErr, p.stdout.String(), p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev not ready after %s", e2eWait)
		}
	}
}

// token returns the demo token printed for email.
func (p *devProc) token(email string) string {
	p.t.Helper()
	m := regexp.MustCompile(`(?m)<` + regexp.QuoteMeta(email) + `>.*\n  (eyJ\S+)$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		p.t.Fatalf("no token for %s in:\n%s", email, p.stdout.String())
	}
	return m[1]
}

// databaseURL is the local cluster's URL from the banner.
func (p *devProc) databaseURL() string {
	p.t.Helper()
	m := regexp.MustCompile(`(?m)^  database    psql "(\S+)"$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		p.t.Fatalf("no database URL in:\n%s", p.stdout.String())
	}
	return m[1]
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for exit status 0.
func (p *devProc) interrupt() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(e2eWait):
		p.t.Fatalf("dev still running %s after SIGINT", e2eWait)
	}
	if p.waitErr != nil {
		p.t.Fatalf("dev exited with %v after SIGINT\n%s", p.waitErr, p.stderr.String())
	}
}

// processesUnder lists running processes whose command line mentions dir
// (PostgreSQL's postmaster and backends are started with -D <dir>/data).
func processesUnder(dir string) []string {
	var found []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, dir) {
			found = append(found, filepath.Base(filepath.Dir(f))+": "+cmdline)
		}
	}
	return found
}

// devSocket runs testdata/client/driver.mjs with one socket and returns
// its report lines as they arrive.
func devSocket(t *testing.T, base, token string) <-chan e2eReport {
	t.Helper()
	node, dir := e2eRequireNode(t)
	cmd := exec.Command(node, filepath.Join(dir, "client", "driver.mjs"), base)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reports := make(chan e2eReport, 100)
	go func() {
		defer close(reports)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r e2eReport
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				reports <- r
			}
		}
	}()
	t.Cleanup(func() {
		_, _ = io.WriteString(stdin, `{"op":"exit"}`+"\n")
		stdin.Close()
		timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		timer.Stop()
		for range reports {
		}
		if t.Failed() {
			t.Logf("driver stderr: %s", stderr.String())
		}
	})
	b, _ := json.Marshal(map[string]any{"op": "connect", "id": "a", "token": token})
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	return reports
}

// nextReport waits for the first report matching ok.
func nextReport(t *testing.T, reports <-chan e2eReport, what string, ok func(e2eReport) bool) e2eReport {
	t.Helper()
	timeout := time.After(e2eWait)
	for {
		select {
		case r, open := <-reports:
			if !open {
				t.Fatalf("driver ended before %s", what)
			}
			if r.Ev == "connect_error" || r.Ev == "fatal" {
				t.Fatalf("waiting for %s: %+v", what, r)
			}
			if ok(r) {
				return r
			}
		case <-timeout:
			t.Fatalf("no %s after %s", what, e2eWait)
		}
	}
}

// TestDevFirstRun is `make run` on a fresh machine: dev from an empty
// working directory creates its cluster under ./.koordi, prints a token that
// a real socket.io-client connects with and receives an event on, and
// Ctrl-C leaves no process behind. A second start reuses the cluster and the
// replication slot (moving to a free port when its own was taken meanwhile),
// and delivers again. A start after a run that was killed
// (its PostgreSQL left running) stops the leftover and starts normally, and
// --simulate streams the demo family's writes.
func TestDevFirstRun(t *testing.T) {
	if cluster == nil { // no PostgreSQL binaries: skipped, or failed under CI
		devRequirePostgres(t)
	}
	dir := t.TempDir()
	// As root, PostgreSQL runs as the postgres user, which must reach the
	// working directory (t.TempDir and its parent are private).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := devEnv("LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json")

	for run := 1; run <= 2; run++ {
		runEnv := env
		if run == 2 { // debug lines too must not carry a token
			runEnv = append(append([]string{}, env...), "LOG_LEVEL=debug")
		}
		p := startDev(t, dir, runEnv)
		if _, err := os.Stat(filepath.Join(dir, ".koordi", "data", "PG_VERSION")); err != nil {
			t.Fatalf("run %d: no cluster under ./.koordi: %v", run, err)
		}
		reports := devSocket(t, p.base, p.token("sam@demo.koordi.app"))
		nextReport(t, reports, "connect", func(r e2eReport) bool { return r.Ev == "connect" })

		conn, err := pgx.Connect(context.Background(), p.databaseURL())
		if err != nil {
			t.Fatal(err)
		}
		var eventID string
		err = conn.QueryRow(context.Background(), `
			UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS DISTINCT FROM $1::uuid THEN $1::uuid ELSE $2::uuid END
			WHERE id = (SELECT id FROM events WHERE event_calendar_id = $3 ORDER BY start_time, id LIMIT 1) RETURNING id::text`,
			ksql.DemoSam, ksql.DemoAlex, ksql.DemoSchool).Scan(&eventID)
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := nextReport(t, reports, "event:assigned", func(r e2eReport) bool {
			return r.Ev == "event" && r.Event == "event:assigned" && len(r.Args) == 2 && strings.Contains(string(r.Args[0]), eventID)
		})
		t.Logf("run %d: %s %s", run, got.Event, got.Args[1])

		p.interrupt()
		if left := processesUnder(dir); len(left) > 0 {
			t.Fatalf("run %d: processes left after SIGINT:\n%s", run, strings.Join(left, "\n"))
		}
		if _, err := os.Stat(filepath.Join(dir, ".koordi", "data", "postmaster.pid")); err == nil {
			t.Fatalf("run %d: postmaster.pid left behind", run)
		}
		devCheckLogs(t, run, p.stderr.String(), p.stdout.String())
		if run == 1 {
			// Something else takes the cluster's port between runs: the
			// next run moves the cluster to a free one.
			u, err := neturl.Parse(p.databaseURL())
			if err != nil {
				t.Fatal(err)
			}
			squatter, err := net.Listen("tcp", u.Host)
			if err != nil {
				t.Fatalf("occupy the cluster's port: %v", err)
			}
			defer squatter.Close()
		}
	}

	// A run killed outright leaves its PostgreSQL running; the next run
	// stops that one and starts normally.
	killed := startDev(t, dir, env)
	if err := killed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-killed.done
	if len(processesUnder(dir)) == 0 {
		t.Fatal("expected the killed run's PostgreSQL to be left running")
	}
	p := startDev(t, dir, env, "--simulate")
	if !strings.Contains(p.stderr.String(), "still running") {
		t.Errorf("the leftover PostgreSQL was not reported:\n%s", p.stderr.String())
	}
	// --simulate: a member of both calendars sees the family's writes,
	// among them a calendar sync with its counts.
	reports := devSocket(t, p.base, p.token("sam@demo.koordi.app"))
	seen := map[string]bool{}
	nextReport(t, reports, "calendar:synced and event:assigned from --simulate", func(r e2eReport) bool {
		if r.Ev == "event" {
			seen[r.Event] = true
		}
		return seen["calendar:synced"] && seen["event:assigned"]
	})
	p.interrupt()
	if left := processesUnder(dir); len(left) > 0 {
		t.Fatalf("processes left after SIGINT:\n%s", strings.Join(left, "\n"))
	}
}

// devCheckLogs checks dev's JSON log: every line is JSON, the state changes
// are there once, no token appears, and the second run reuses the slot.
func devCheckLogs(t *testing.T, run int, logs, stdout string) {
	t.Helper()
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("run %d: LOG_FORMAT=json wrote a non-JSON line: %q", run, l)
			continue
		}
		counts[rec.Msg]++
	}
	for _, msg := range []string{"local PostgreSQL running", "listening", "streaming started", "shutting down", "stopped", "local PostgreSQL stopped"} {
		if counts[msg] != 1 {
			t.Errorf("run %d: log %q appears %d times, want once (%v)", run, msg, counts[msg], counts)
		}
	}
	if run == 1 {
		// At the default level only state changes are logged, never a
		// line per event or per socket.
		known := []string{"local PostgreSQL running", "listening", "derivation state bootstrapped", "replication slot created",
			"streaming started", "caught up: accepting sockets", "shutting down", "stopped", "local PostgreSQL stopped"}
		for msg := range counts {
			if !slices.Contains(known, msg) {
				t.Errorf("run 1: unexpected log line at the default level: %q", msg)
			}
		}
	}
	if run == 2 && counts["the local PostgreSQL's port is taken; moving it"] != 1 {
		t.Errorf("run 2: the taken port was not reported (%v)", counts)
	}
	if want := map[int]int{1: 1, 2: 0}[run]; counts["replication slot created"] != want {
		t.Errorf("run %d: %q logged %d times, want %d (the second run reuses the slot)", run, "replication slot created", counts["replication slot created"], want)
	}
	for _, tok := range regexp.MustCompile(`eyJ[\w-]+\.[\w-]+\.[\w-]+`).FindAllString(stdout, -1) {
		if strings.Contains(logs, tok) || strings.Contains(logs, strings.Split(tok, ".")[2]) {
			t.Errorf("run %d: a token appears in the log", run)
		}
	}
}

// devRequirePostgres fails under CI and skips elsewhere when the package has
// no PostgreSQL, as pgcluster.Require does.
func devRequirePostgres(t *testing.T) {
	t.Helper()
	const msg = "no PostgreSQL server binaries for dev's local cluster"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
