package main

import (
	"context"
	"encoding/json"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// devProc is a `koordi-realtime dev` subprocess; base is where it listens,
// read from its banner (it picks a free port itself).
type devProc struct {
	*proc
	base string
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
	p := &devProc{proc: startProc(t, "dev", dir, env, append([]string{"dev"}, args...)...)}
	interruptAtCleanup(t, p)
	p.waitReady(func() string {
		if p.base == "" {
			if m := devURLRe.FindStringSubmatch(p.stdout.String()); m != nil {
				p.base = m[1]
			}
		}
		return p.base
	})
	return p
}

// interruptAtCleanup stops p with SIGINT at the end of the test. It runs
// before the proc's own cleanup, which kills: a failed test still stops dev
// the way a user does, so its PostgreSQL (and nats-server) go too.
func interruptAtCleanup(t *testing.T, p *devProc) {
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
			}
		}
	})
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
	if err, _ := p.signal(syscall.SIGINT, waitLimit); err != nil {
		p.t.Fatalf("dev exited with %v after SIGINT\n%s", err, p.stderr.String())
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

// devSocket connects one socket, "a", to dev with token.
func devSocket(t *testing.T, base, token string) *testClients {
	t.Helper()
	c := startClients(t, base)
	c.connectAsync("a", token)
	return c
}

// devWait waits for a report that matches ok. Dev's sockets have valid
// tokens and nothing to wait for, so a refusal fails the test at once.
func devWait(c *testClients, what string, ok func(nodeReport) bool) nodeReport {
	c.t.Helper()
	var got nodeReport
	c.waitFor(what, func(rs []nodeReport) bool {
		for _, r := range rs {
			if r.Ev == "connect_error" {
				c.t.Fatalf("waiting for %s: %+v", what, r)
			}
			if ok(r) {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// assignDemoEvent flips the assignee of Maya · School's first event
// between Sam and Alex, a write that every member of the calendar must
// see, and returns the event's id.
func assignDemoEvent(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var eventID string
	if err := conn.QueryRow(context.Background(), `
		UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS DISTINCT FROM $1::uuid THEN $1::uuid ELSE $2::uuid END
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = $3 ORDER BY start_time, id LIMIT 1) RETURNING id::text`,
		ksql.DemoSam, ksql.DemoAlex, ksql.DemoSchool).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	return eventID
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
	pgcluster.Require(t, cluster) // dev needs PostgreSQL's binaries, as the cluster does
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
		c := devSocket(t, p.base, p.token("sam@demo.koordi.app"))
		devWait(c, "connect", func(r nodeReport) bool { return r.Ev == "connect" })

		conn, err := pgx.Connect(context.Background(), p.databaseURL())
		if err != nil {
			t.Fatal(err)
		}
		eventID := assignDemoEvent(t, conn)
		conn.Close(context.Background())
		got := devWait(c, "event:assigned", func(r nodeReport) bool {
			return r.Ev == "event" && r.Event == "event:assigned" && len(r.Args) == 2 && strings.Contains(string(r.Args[0]), eventID)
		})
		t.Logf("run %d: %s %s", run, got.Event, got.Args[1])

		p.interrupt()
		c.close() // its socket would only retry against a stopped dev
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
	startDev(t, dir, env).kill()
	if len(processesUnder(dir)) == 0 {
		t.Fatal("expected the killed run's PostgreSQL to be left running")
	}
	p := startDev(t, dir, env, "--simulate")
	if !strings.Contains(p.stderr.String(), "still running") {
		t.Errorf("the leftover PostgreSQL was not reported:\n%s", p.stderr.String())
	}
	// --simulate: a member of both calendars sees the family's writes,
	// among them a calendar sync with its counts.
	c := devSocket(t, p.base, p.token("sam@demo.koordi.app"))
	seen := map[string]bool{}
	devWait(c, "calendar:synced and event:assigned from --simulate", func(r nodeReport) bool {
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
	// The first run creates the slot and starts streaming; the second
	// resumes from it, as the README says.
	stream := map[int]string{1: "streaming started", 2: "streaming resumed"}[run]
	for _, msg := range []string{"local PostgreSQL running", "listening", stream, "shutting down", "stopped", "local PostgreSQL stopped"} {
		if counts[msg] != 1 {
			t.Errorf("run %d: log %q appears %d times, want once (%v)", run, msg, counts[msg], counts)
		}
	}
	if other := map[int]string{1: "streaming resumed", 2: "streaming started"}[run]; counts[other] != 0 {
		t.Errorf("run %d: log %q appears %d times, want never", run, other, counts[other])
	}
	if run == 1 {
		// At the default level only state changes are logged, never a
		// line per event or per socket.
		known := []string{"local PostgreSQL running", "listening", "derivation state bootstrapped", "replication slot created",
			"streaming started", "stream has a gap: sessions from before it will be told to refetch", "caught up: accepting sockets", "shutting down", "stopped", "local PostgreSQL stopped"}
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
