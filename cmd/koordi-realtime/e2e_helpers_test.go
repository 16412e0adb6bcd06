package main

// Helpers of the end-to-end tests (serve_e2e_test.go): the real
// `koordi-realtime serve` binary as a subprocess, real socket.io-client
// sockets in one Node process (testdata/e2e/clients.mjs), databases prepared
// with the binary's own migrate and setup commands.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// e2eSecret is the JWT_SECRET of every e2e server and token.
const e2eSecret = "e2e-secret-that-is-long-enough-0123456789"

// e2eWait bounds every wait for a condition; generous, because other
// packages' tests share the two cores.
const e2eWait = 45 * time.Second

// e2eRequireNode returns the node binary and the testdata directory holding
// node_modules. A missing Node or socket.io-client fails the test under CI
// and skips it elsewhere.
func e2eRequireNode(t *testing.T) (node, dir string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (install with: cd testdata && npm ci)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH: %v", err)
	}
	dir, err = filepath.Abs(filepath.Join("..", "..", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socket.io-client", "package.json")); err != nil {
		missing("socket.io-client is not installed: %v", err)
	}
	return node, dir
}

// e2eCommand runs a koordi-realtime command in-process and fails the test
// unless it exits 0. It returns stdout.
func e2eCommand(t *testing.T, vars map[string]string, args ...string) string {
	t.Helper()
	var stdout, stderr syncBuffer
	if code := run(context.Background(), envOf(vars, &stdout, &stderr), args); code != 0 {
		t.Fatalf("koordi-realtime %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

// e2eDatabase creates a fresh database with Koordi's tables (the migrate
// command) and returns its URL and a connection for seeding and writing.
// Call e2eSetup after seeding. Every e2e test starts here, so a missing
// Node is reported before anything else starts.
func e2eDatabase(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	e2eRequireNode(t)
	url := pgcluster.NewDatabase(t, cluster)
	e2eCommand(t, map[string]string{"DATABASE_URL": url}, "migrate")
	return url, pgcluster.Connect(t, url)
}

// e2eSetup runs the setup command (replica identity, publication, emit).
func e2eSetup(t *testing.T, url string) {
	t.Helper()
	e2eCommand(t, map[string]string{"DATABASE_URL": url}, "setup")
}

// e2eToken mints a token with the token command.
func e2eToken(t *testing.T, userID, email string, ttl time.Duration) string {
	t.Helper()
	out := e2eCommand(t, map[string]string{"JWT_SECRET": e2eSecret},
		"token", "--user-id", userID, "--email", email, "--ttl", ttl.String())
	return strings.TrimSpace(out)
}

// e2eSlot names a replication slot after the test's database (slot names
// are cluster-wide).
func e2eSlot(prefix, url string) string {
	db := url[strings.LastIndex(url, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	return prefix + "_" + db
}

// e2eExec runs SQL on conn and fails the test on error.
func e2eExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// e2eSlotConfirmed reads the slot's confirmed_flush_lsn.
func e2eSlotConfirmed(t *testing.T, conn *pgx.Conn, slot string) uint64 {
	t.Helper()
	var lsn string
	if err := conn.QueryRow(context.Background(),
		`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn); err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("confirmed_flush_lsn %q: %v", lsn, err)
	}
	return hi<<32 | lo
}

// e2eDropSlot drops a test's replication slot once its process is gone:
// slots are cluster-wide and the package's cluster has a limited number
// (max_replication_slots), shared with the tests that run later.
func e2eDropSlot(t *testing.T, url, slot string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("drop slot %s: %v", slot, err)
		return
	}
	defer conn.Close(context.Background())
	for {
		// The WAL sender of a killed process may take a moment to notice.
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("drop slot %s: %v", slot, err)
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// e2eFreeAddr reserves a loopback port for a server that is restarted on it.
func e2eFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// e2eServer is a `koordi-realtime serve` subprocess on a fixed address;
// start it again after a kill or stop to get its successor.
type e2eServer struct {
	t    *testing.T
	addr string
	env  []string

	// Set by start; read after done is closed.
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{}
	waitErr error
	logs    []*syncBuffer // every run's stderr, for failure reports
}

// startE2EServer starts serve on a fresh loopback port with its own slot and
// waits until it is ready. vars add to or override the environment.
func startE2EServer(t *testing.T, url string, vars ...string) *e2eServer {
	t.Helper()
	s := &e2eServer{t: t, addr: e2eFreeAddr(t)}
	s.env = append(os.Environ(),
		"DATABASE_URL="+url,
		"JWT_SECRET="+e2eSecret,
		"LISTEN_ADDR="+s.addr,
		"SLOT_NAME="+e2eSlot("serve", url),
		"FRONTEND_URL=http://localhost:5173",
		"LOG_LEVEL=debug",
		"SHUTDOWN_GRACE=10s",
	)
	s.env = append(s.env, vars...)
	t.Cleanup(func() {
		if s.running() {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		e2eDropSlot(t, url, e2eSlot("serve", url))
		if t.Failed() {
			for i, l := range s.logs {
				t.Logf("serve run %d stderr (last lines):\n%s", i+1, e2eLastLines(l.String(), 60))
			}
		}
	})
	s.start()
	return s
}

// start runs the process and waits for /readyz.
func (s *e2eServer) start() {
	t := s.t
	t.Helper()
	s.stderr = &syncBuffer{}
	s.logs = append(s.logs, s.stderr)
	s.done = make(chan struct{})
	s.cmd = exec.Command(binary(t), "serve")
	s.cmd.Env = s.env
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd, done := s.cmd, s.done
	go func() {
		s.waitErr = cmd.Wait()
		close(done)
	}()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(e2eWait)
	for {
		resp, err := client.Get("http://" + s.addr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("serve exited before it was ready: %v\n%s", s.waitErr, s.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after %s\n%s", e2eWait, e2eLastLines(s.stderr.String(), 40))
		}
	}
}

func (s *e2eServer) running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// url is what clients connect to.
func (s *e2eServer) url() string { return "http://" + s.addr }

// kill ends the process with SIGKILL: no goodbye, no last confirmation.
func (s *e2eServer) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatal(err)
	}
	<-s.done
}

// stop sends SIGTERM and returns the exit error (nil for status 0) and how
// long the process took to exit; it fails the test if it takes longer than
// limit.
func (s *e2eServer) stop(limit time.Duration) (error, time.Duration) {
	s.t.Helper()
	begin := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.done:
		return s.waitErr, time.Since(begin)
	case <-time.After(limit):
		s.t.Fatalf("serve still running %s after SIGTERM\n%s", limit, e2eLastLines(s.stderr.String(), 40))
		return nil, 0
	}
}

func e2eLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// e2eReport is one line clients.mjs printed.
type e2eReport struct {
	ID        string            `json:"id"`
	Ev        string            `json:"ev"`
	Event     string            `json:"event"`
	Args      []json.RawMessage `json:"args"`
	Message   string            `json:"message"`
	Reason    string            `json:"reason"`
	Transport string            `json:"transport"`
	PID       string            `json:"pid"`
	Recovered bool              `json:"recovered"`
	Seq       int               `json:"seq"`
	Error     string            `json:"error"`
}

// e2eEvent is a server event one socket received.
type e2eEvent struct {
	Event  string
	Data   json.RawMessage
	Offset schema.Offset
	Raw    string // the offset as sent
}

// event decodes an "event" report: [payload, offset].
func (r *e2eReport) event() (e2eEvent, error) {
	if len(r.Args) != 2 {
		return e2eEvent{}, fmt.Errorf("%s %s: %d arguments, want payload and offset", r.ID, r.Event, len(r.Args))
	}
	var raw string
	if err := json.Unmarshal(r.Args[1], &raw); err != nil {
		return e2eEvent{}, fmt.Errorf("%s %s: last argument %s is not an offset string", r.ID, r.Event, r.Args[1])
	}
	off, err := schema.ParseOffset(raw)
	if err != nil {
		return e2eEvent{}, fmt.Errorf("%s %s: %w", r.ID, r.Event, err)
	}
	return e2eEvent{Event: r.Event, Data: r.Args[0], Offset: off, Raw: raw}, nil
}

// e2eClients is one Node process holding many socket.io-client sockets.
type e2eClients struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr syncBuffer
	read   chan struct{} // closed when stdout is at EOF

	mu      sync.Mutex
	reports []e2eReport
	changed chan struct{} // closed and replaced on every report
	seq     int
}

// startE2EClients starts clients.mjs against url and waits for it to be ready.
func startE2EClients(t *testing.T, url string) *e2eClients {
	t.Helper()
	node, dir := e2eRequireNode(t)
	c := &e2eClients{t: t, read: make(chan struct{}), changed: make(chan struct{})}
	c.cmd = exec.Command(node, filepath.Join("e2e", "clients.mjs"), url)
	c.cmd.Dir = dir
	c.cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var r e2eReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = e2eReport{Ev: "fatal", Message: fmt.Sprintf("unparsable report %q: %v", sc.Text(), err)}
			}
			c.mu.Lock()
			c.reports = append(c.reports, r)
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.close)
	c.waitFor("clients.mjs ready", func(rs []e2eReport) bool {
		for _, r := range rs {
			if r.Ev == "ready" {
				return true
			}
		}
		return false
	})
	return c
}

func (c *e2eClients) close() {
	_ = c.send(map[string]any{"op": "exit"})
	_ = c.stdin.Close()
	select {
	case <-c.read:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.read
	}
	_ = c.cmd.Wait()
	if c.t.Failed() {
		if s := c.stderr.String(); s != "" {
			c.t.Logf("clients.mjs stderr:\n%s", e2eLastLines(s, 40))
		}
	}
}

func (c *e2eClients) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	_, err = c.stdin.Write(append(b, '\n'))
	return err
}

func (c *e2eClients) do(cmd map[string]any) {
	c.t.Helper()
	if err := c.send(cmd); err != nil {
		c.t.Fatalf("clients.mjs: %v", err)
	}
}

// connect opens socket id with token over transports (nil: polling with
// upgrade to websocket) and waits for its first connect.
func (c *e2eClients) connect(id, token string, transports ...string) e2eReport {
	c.t.Helper()
	c.connectAsync(id, token, transports...)
	return c.waitConnect(id, 1)
}

// connectAsync opens socket id without waiting.
func (c *e2eClients) connectAsync(id, token string, transports ...string) {
	c.t.Helper()
	cmd := map[string]any{"op": "connect", "id": id, "token": token}
	if len(transports) > 0 {
		cmd["transports"] = transports
	}
	c.do(cmd)
}

// waitConnect waits for socket id's n-th connect and returns it.
func (c *e2eClients) waitConnect(id string, n int) e2eReport {
	c.t.Helper()
	var got e2eReport
	c.waitFor(fmt.Sprintf("connect #%d of %s", n, id), func(rs []e2eReport) bool {
		seen := 0
		for _, r := range rs {
			if r.ID == id && r.Ev == "connect" {
				if seen++; seen == n {
					got = r
					return true
				}
			}
		}
		return false
	})
	return got
}

// emit sends a client event with an ack and returns the ack's arguments.
func (c *e2eClients) emit(id, event string, args ...any) []json.RawMessage {
	c.t.Helper()
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	c.do(map[string]any{"op": "emit", "id": id, "event": event, "args": args, "seq": seq})
	var ack e2eReport
	c.waitFor(fmt.Sprintf("ack of %s %s", id, event), func(rs []e2eReport) bool {
		for _, r := range rs {
			if r.Ev == "ack" && r.Seq == seq {
				ack = r
				return true
			}
		}
		return false
	})
	if ack.Error != "" {
		c.t.Fatalf("%s %s: %s", id, event, ack.Error)
	}
	return ack.Args
}

// snapshot returns the reports so far.
func (c *e2eClients) snapshot() []e2eReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reports[:len(c.reports):len(c.reports)]
}

// waitFor waits until cond holds for the reports so far. A fatal report
// from the driver fails the test at once.
func (c *e2eClients) waitFor(what string, cond func([]e2eReport) bool) {
	c.t.Helper()
	deadline := time.NewTimer(e2eWait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		rs, changed := c.reports[:len(c.reports):len(c.reports)], c.changed
		c.mu.Unlock()
		for _, r := range rs {
			if r.Ev == "fatal" {
				c.t.Fatalf("clients.mjs: %s", r.Message)
			}
		}
		if cond(rs) {
			return
		}
		select {
		case <-changed:
		case <-c.read:
			c.t.Fatalf("clients.mjs exited while waiting for %s\n%s", what, c.stderr.String())
		case <-deadline.C:
			c.t.Fatalf("timed out after %s waiting for %s; last reports:\n%s", e2eWait, what, e2eTail(rs, 30))
		}
	}
}

func e2eTail(rs []e2eReport, n int) string {
	if len(rs) > n {
		rs = rs[len(rs)-n:]
	}
	var b strings.Builder
	for _, r := range rs {
		j, _ := json.Marshal(r)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// events returns the server events socket id received, in order.
func (c *e2eClients) events(id string) []e2eEvent {
	c.t.Helper()
	var out []e2eEvent
	for _, r := range c.snapshot() {
		if r.ID != id || r.Ev != "event" {
			continue
		}
		ev, err := r.event()
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// of returns socket id's reports of kind ev.
func (c *e2eClients) of(id, ev string) []e2eReport {
	var out []e2eReport
	for _, r := range c.snapshot() {
		if r.ID == id && r.Ev == ev {
			out = append(out, r)
		}
	}
	return out
}

// waitEvent waits until socket id has received an event matching match.
func (c *e2eClients) waitEvent(id, what string, match func(e2eEvent) bool) {
	c.t.Helper()
	c.waitFor(id+" receives "+what, func(rs []e2eReport) bool {
		for i := range rs {
			if rs[i].ID != id || rs[i].Ev != "event" {
				continue
			}
			if ev, err := rs[i].event(); err == nil && match(ev) {
				return true
			}
		}
		return false
	})
}

// e2eFence is the explicit event (koordi_realtime.emit) the tests commit
// last to every user room: once a socket received it, every event committed
// before it has reached that socket or never will (one FIFO queue per socket,
// commit order).
const e2eFence = "e2e:fence"

// e2eEmitFence emits e2eFence number n to every given user room in one transaction.
func e2eEmitFence(t *testing.T, conn *pgx.Conn, n int, userIDs ...string) {
	t.Helper()
	var sql strings.Builder
	sql.WriteString("BEGIN;")
	for _, u := range userIDs {
		fmt.Fprintf(&sql, "SELECT koordi_realtime.emit('user:%s', '%s', '{\"n\": %d}');", u, e2eFence, n)
	}
	sql.WriteString("COMMIT;")
	e2eExec(t, conn, sql.String())
}

// waitFence waits until every socket received fence number n.
func (c *e2eClients) waitFence(n int, ids ...string) {
	c.t.Helper()
	for _, id := range ids {
		c.waitEvent(id, fmt.Sprintf("fence %d", n), func(ev e2eEvent) bool {
			return ev.Event == e2eFence && e2eJSONEqual(ev.Data, json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)))
		})
	}
}

// e2eJSONEqual compares JSON values, not their spelling.
func e2eJSONEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// e2eSubset reports whether every field of want has the same JSON value in
// data (payloads may carry extra fields, DESIGN.md §4).
func e2eSubset(data json.RawMessage, want map[string]any) error {
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		return fmt.Errorf("payload %s: %w", data, err)
	}
	for k, v := range want {
		wb, _ := json.Marshal(v)
		var w any
		_ = json.Unmarshal(wb, &w)
		if g, ok := got[k]; !ok || !reflect.DeepEqual(g, w) {
			return fmt.Errorf("payload %s: %s = %v, want %s", data, k, got[k], wb)
		}
	}
	return nil
}
