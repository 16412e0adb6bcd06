package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// syncBuffer is a bytes.Buffer safe for one writer and polling readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func envOf(vars map[string]string, stdout, stderr *syncBuffer) *environment {
	return &environment{stdout: stdout, stderr: stderr, getenv: func(k string) string { return vars[k] }}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// line is one printed event.
type line struct {
	Offset string          `json:"offset"`
	Room   string          `json:"room"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
}

func parseLines(t *testing.T, out string) []line {
	t.Helper()
	var lines []line
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		if s == "" {
			continue
		}
		var l line
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

const (
	tailUser  = "11111111-1111-4111-8111-111111111111"
	tailChild = "33333333-3333-4333-8333-333333333333"
	tailCal   = "44444444-4444-4444-8444-444444444444"
)

func seedCalendar(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	e2eExec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'ada@example.com', 'Ada')`, tailUser)
	e2eExec(t, conn, `INSERT INTO children (id, name) VALUES ($1, 'Kid')`, tailChild)
	e2eExec(t, conn, `INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES ($1, 'Soccer', 'https://example.com/a.ics', $2, $3)`,
		tailCal, tailChild, tailUser)
}

// TestTailPrintsEvents runs tail in-process: it prints each derived event as
// one JSON line and exits 0 when its context ends (SIGINT/SIGTERM in main).
func TestTailPrintsEvents(t *testing.T) {
	url, conn := pgcluster.NewKoordiDatabase(t, cluster)
	var stdout, stderr syncBuffer
	env := envOf(map[string]string{"DATABASE_URL": url, "TAIL_SLOT_NAME": e2eSlot("tail", url)}, &stdout, &stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() { code <- run(ctx, env, []string{"tail"}) }()
	waitUntil(t, "streaming", func() bool { return strings.Contains(stderr.String(), "streaming started") })

	seedCalendar(t, conn)
	e2eExec(t, conn, `INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time) VALUES ($1, 'u1', 'Practice', now(), now())`, tailCal)
	waitUntil(t, "event:created", func() bool { return strings.Contains(stdout.String(), `"event:created"`) })
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d, stderr:\n%s", c, stderr.String())
	}
	lines := parseLines(t, stdout.String())
	got := lines[len(lines)-1]
	if got.Room != schema.CalendarRoom(tailCal) || got.Event != schema.EventCreated {
		t.Fatalf("last line %+v, want event:created to calendar:%s", got, tailCal)
	}
	if _, err := schema.ParseOffset(got.Offset); err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(got.Data, &payload); err != nil || payload["event_title"] != "Practice" {
		t.Fatalf("data %s: %v", got.Data, err)
	}
}

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

// scanLines collects a process's stdout lines.
func scanLines(r *bufio.Scanner, into *syncBuffer) {
	for r.Scan() {
		_, _ = into.Write(append(r.Bytes(), '\n'))
	}
}

// tailProc is a `koordi-realtime tail` subprocess.
type tailProc struct {
	cmd     *exec.Cmd
	stdout  syncBuffer
	stderr  syncBuffer
	scanned chan struct{} // closed when stdout is at EOF
}

func startTail(t *testing.T, url string) *tailProc {
	t.Helper()
	p := &tailProc{scanned: make(chan struct{})}
	p.cmd = exec.Command(binary(t), "tail")
	p.cmd.Env = append(os.Environ(),
		"DATABASE_URL="+url,
		"TAIL_SLOT_NAME="+e2eSlot("tail", url),
		"TAIL_STATUS_INTERVAL=100ms",
		"LOG_LEVEL=info",
	)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.scanned)
		scanLines(bufio.NewScanner(out), &p.stdout)
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.scanned
			_ = p.cmd.Wait()
		}
	})
	waitUntil(t, "tail streaming", func() bool {
		return strings.Contains(p.stderr.String(), "streaming started")
	})
	return p
}

// TestTailCrashRedelivers kills tail (SIGKILL, no goodbye) in the middle of
// thousands of single-row commits and starts it again: every commit's event
// is printed at least once across both runs, events printed by both carry
// identical offsets, and offsets increase within each run. The second run
// ends on SIGTERM with exit status 0.
func TestTailCrashRedelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and writes thousands of commits")
	}
	url, conn := pgcluster.NewKoordiDatabase(t, cluster)
	seedCalendar(t, conn)
	var eventID string
	if err := conn.QueryRow(context.Background(),
		`INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time) VALUES ($1, 'u1', 'initial', now(), now()) RETURNING id`,
		tailCal).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	first := startTail(t, url)

	const total = 3000
	progress := make(chan int, total)
	writerErr := make(chan error, 1)
	go func() {
		defer close(progress)
		w, err := pgx.Connect(context.Background(), url)
		if err != nil {
			writerErr <- err
			return
		}
		defer w.Close(context.Background())
		for i := 0; i < total; i++ {
			if _, err := w.Exec(context.Background(), `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("t-%04d", i), eventID); err != nil {
				writerErr <- err
				return
			}
			progress <- i
		}
		writerErr <- nil
	}()

	waitUntil(t, "a third of the events printed", func() bool {
		return strings.Count(first.stdout.String(), `"event:updated"`) >= total/3
	})
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.scanned
	_ = first.cmd.Wait()

	second := startTail(t, url)
	for range progress {
	}
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf(`"event_title":"t-%04d"`, total-1)
	waitUntil(t, "the last commit printed", func() bool { return strings.Contains(second.stdout.String(), last) })
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-second.scanned
	if err := second.cmd.Wait(); err != nil {
		t.Fatalf("tail after SIGTERM: %v; stderr:\n%s", err, second.stderr.String())
	}
	// On SIGTERM tail confirms what it printed before it exits.
	lastLines := tailLines(t, second.stdout.String(), false)
	lastOff, err := schema.ParseOffset(lastLines[len(lastLines)-1].Offset)
	if err != nil {
		t.Fatal(err)
	}
	var confirmed string
	if err := conn.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, e2eSlot("tail", url)).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(confirmed, "%X/%X", &hi, &lo); err != nil {
		t.Fatal(err)
	}
	if hi<<32|lo <= lastOff.LSN {
		t.Fatalf("after SIGTERM the slot confirms %s, not past the last printed commit %X", confirmed, lastOff.LSN)
	}

	runs := [][]line{tailLines(t, first.stdout.String(), true), tailLines(t, second.stdout.String(), false)}
	offsets := map[string]string{} // title → offset
	redelivered := 0
	for i, lines := range runs {
		var prev schema.Offset
		for _, l := range lines {
			off, err := schema.ParseOffset(l.Offset)
			if err != nil {
				t.Fatal(err)
			}
			if off.Compare(prev) <= 0 {
				t.Fatalf("run %d: offset %s after %s", i+1, off, prev)
			}
			prev = off
			if l.Event != schema.EventUpdated {
				continue
			}
			var p struct {
				Title string `json:"event_title"`
			}
			if err := json.Unmarshal(l.Data, &p); err != nil {
				t.Fatal(err)
			}
			if o, ok := offsets[p.Title]; ok {
				redelivered++
				if o != l.Offset {
					t.Fatalf("%s printed with offset %s, then %s", p.Title, o, l.Offset)
				}
			}
			offsets[p.Title] = l.Offset
		}
	}
	for i := 0; i < total; i++ {
		if _, ok := offsets[fmt.Sprintf("t-%04d", i)]; !ok {
			t.Fatalf("commit t-%04d was never printed", i)
		}
	}
	t.Logf("%d commits; first run printed %d lines, second %d; %d redelivered", total, len(runs[0]), len(runs[1]), redelivered)
}

// tailLines parses printed lines; a killed process may have left its last
// line unfinished.
func tailLines(t *testing.T, out string, killed bool) []line {
	t.Helper()
	if killed && !strings.HasSuffix(out, "\n") {
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			out = out[:i+1]
		} else {
			out = ""
		}
	}
	return parseLines(t, out)
}

// TestTailUserErrors: what the user must fix ends tail with exit status 2
// and one line on stderr that says what is wrong.
func TestTailUserErrors(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/koordi?sslmode=disable&connect_timeout=5", l.Addr().(*net.TCPAddr).Port)
	}
	replicaCluster := func() string {
		c, err := pgcluster.Start(context.Background(), pgcluster.Config{Settings: map[string]string{"wal_level": "replica"}})
		if err != nil {
			pgcluster.Require(t, nil)
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop() })
		url, err := c.CreateDatabase(context.Background(), "koordi")
		if err != nil {
			t.Fatal(err)
		}
		conn := pgcluster.Connect(t, url)
		if err := ksql.Migrate(context.Background(), conn); err != nil {
			t.Fatal(err)
		}
		if err := ksql.Setup(context.Background(), conn, "koordi_realtime"); err != nil {
			t.Fatal(err)
		}
		return url
	}
	slotInUse := func() string {
		url, _ := pgcluster.NewKoordiDatabase(t, cluster)
		var stdout, stderr syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, envOf(map[string]string{"DATABASE_URL": url, "TAIL_SLOT_NAME": "busy_slot"}, &stdout, &stderr), []string{"tail"})
		}()
		t.Cleanup(func() { cancel(); <-done })
		waitUntil(t, "the first tail streaming", func() bool { return strings.Contains(stderr.String(), "streaming started") })
		return url
	}
	tests := []struct {
		name string
		url  func() string
		want string
	}{
		{"missing DATABASE_URL", func() string { return "" }, "DATABASE_URL is not set"},
		{"unreachable database", closedPort, "cannot connect to PostgreSQL"},
		{"wal_level replica", replicaCluster, "wal_level is not logical"},
		{"missing tables", func() string { return pgcluster.NewDatabase(t, cluster) }, "watched table missing"},
		{"no setup", func() string {
			url := pgcluster.NewDatabase(t, cluster)
			if err := ksql.Migrate(context.Background(), pgcluster.Connect(t, url)); err != nil {
				t.Fatal(err)
			}
			return url
		}, "replica identity is not FULL"},
		{"slot active elsewhere", slotInUse, "in use by another process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			vars := map[string]string{"DATABASE_URL": tt.url(), "TAIL_SLOT_NAME": "busy_slot"}
			code := run(context.Background(), envOf(vars, &stdout, &stderr), []string{"tail"})
			msg := stderr.String()
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, msg)
			}
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "koordi-realtime tail: ") || !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q: want one line naming %q", msg, tt.want)
			}
			t.Log(strings.TrimSpace(msg))
		})
	}
}
