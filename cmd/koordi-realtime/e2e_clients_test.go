package main

// The browser side of the process tests: Node scripts under testdata/ that
// hold real socket.io-client sockets (client/driver.mjs) or chromium pages
// (browser/inspector.mjs), and the checks of what each socket received.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// requireNode returns the node binary and the testdata directory, once node
// and the npm packages pkgs are installed; see unavailable.
func requireNode(t *testing.T, pkgs ...string) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "node is not on PATH: %v", err)
	}
	dir, err = filepath.Abs(filepath.Join("..", "..", "testdata"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			unavailable(t, "%s is not installed (make node-deps): %v", pkg, err)
		}
	}
	return node, dir
}

// nodeReport is one line a driver printed; each script fills its own fields.
type nodeReport struct {
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
	Offset    string            `json:"offset"`  // inspector.mjs
	Sockets   string            `json:"sockets"` // inspector.mjs
	Value     json.RawMessage   `json:"value"`   // page.mjs
}

// nodeDriver is a Node script driven line by line: one JSON command per
// line on stdin, one JSON report per line on stdout. Every report is kept,
// in order, for the whole test, because the checks read what each socket
// received from its first connect on.
type nodeDriver struct {
	t      *testing.T
	script string
	wait   time.Duration // bound of every wait for a report
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr syncBuffer
	read   chan struct{} // closed at stdout's EOF, after the last report
	closed sync.Once

	mu      sync.Mutex
	reports []nodeReport
	changed chan struct{} // closed and replaced on every report
}

// startNode runs testdata/<script> with args, once node and pkg are there,
// and waits for its first report, "ready".
func startNode(t *testing.T, pkg string, wait time.Duration, script string, args ...string) *nodeDriver {
	t.Helper()
	node, dir := requireNode(t, pkg)
	d := &nodeDriver{t: t, script: script, wait: wait, read: make(chan struct{}), changed: make(chan struct{})}
	d.cmd = exec.Command(node, append([]string{filepath.Join(dir, script)}, args...)...)
	d.cmd.Dir = dir
	d.cmd.Stderr = &d.stderr
	var err error
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.read)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var r nodeReport
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = nodeReport{Ev: "fatal", Message: fmt.Sprintf("unparsable report %q: %v", sc.Text(), err)}
			}
			d.mu.Lock()
			d.reports = append(d.reports, r)
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
	}()
	t.Cleanup(d.close)
	d.waitFor(script+" ready", func(rs []nodeReport) bool {
		return slices.ContainsFunc(rs, func(r nodeReport) bool { return r.Ev == "ready" })
	})
	return d
}

// close asks the script to exit (sockets disconnect, the browser closes)
// and kills it if it does not. Called by cleanup, or earlier by a test that
// must see the script gone before it stops the server.
func (d *nodeDriver) close() {
	d.closed.Do(func() {
		_ = d.send(map[string]any{"op": "exit"})
		_ = d.stdin.Close()
		select {
		case <-d.read:
		case <-time.After(20 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.read
		}
		_ = d.cmd.Wait()
		if d.t.Failed() {
			if s := d.stderr.String(); s != "" {
				d.t.Logf("%s stderr:\n%s", d.script, lastLines(s, 40))
			}
		}
	})
}

func (d *nodeDriver) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	_, err = d.stdin.Write(append(b, '\n'))
	return err
}

// do sends a command and fails the test if the script is gone.
func (d *nodeDriver) do(cmd map[string]any) {
	d.t.Helper()
	if err := d.send(cmd); err != nil {
		d.t.Fatalf("%s: %v", d.script, err)
	}
}

// snapshot returns the reports so far.
func (d *nodeDriver) snapshot() []nodeReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reports[:len(d.reports):len(d.reports)]
}

// waitFor waits until cond holds for the reports so far. A fatal report
// fails the test at once: the script found something wrong and says what.
func (d *nodeDriver) waitFor(what string, cond func([]nodeReport) bool) {
	d.t.Helper()
	deadline := time.NewTimer(d.wait)
	defer deadline.Stop()
	exited := false
	for {
		d.mu.Lock()
		rs, changed := d.reports[:len(d.reports):len(d.reports)], d.changed
		d.mu.Unlock()
		for _, r := range rs {
			if r.Ev == "fatal" {
				d.t.Fatalf("%s: %s", d.script, r.Message)
			}
		}
		if cond(rs) {
			return
		}
		if exited { // every report is in: nothing more can come
			d.t.Fatalf("%s exited while waiting for %s\n%s", d.script, what, lastLines(d.stderr.String(), 40))
		}
		select {
		case <-changed:
		case <-d.read:
			exited = true
		case <-deadline.C:
			d.t.Fatalf("timed out after %s waiting for %s; last reports:\n%s", d.wait, what, lastReports(rs, 30))
		}
	}
}

func lastReports(rs []nodeReport, n int) string {
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

// testClients is client/driver.mjs: real socket.io-client sockets, many in
// one Node process, each named by the test.
type testClients struct {
	*nodeDriver
	seq int // of the last emit
}

func startClients(t *testing.T, url string) *testClients {
	t.Helper()
	return &testClients{nodeDriver: startNode(t, "socket.io-client", waitLimit, "client/driver.mjs", url)}
}

// connect opens socket id with token over transports (none: polling, then
// the upgrade to websocket) and waits for its first connect.
func (c *testClients) connect(id, token string, transports ...string) nodeReport {
	c.t.Helper()
	c.connectAsync(id, token, transports...)
	return c.waitConnect(id, 1)
}

// connectAsync opens socket id without waiting. The socket reconnects for
// as long as a test waits, as a browser's does, however long a restarted
// serve takes to be ready.
func (c *testClients) connectAsync(id, token string, transports ...string) {
	c.t.Helper()
	cmd := map[string]any{"op": "connect", "id": id, "token": token,
		"reconnectionDelayMax": 500, "reconnectionAttempts": "Infinity"}
	if len(transports) > 0 {
		cmd["transports"] = transports
	}
	c.do(cmd)
}

// drop closes socket id's transport as a network blip would: the client
// reconnects and recovers by itself.
func (c *testClients) drop(id string) {
	c.t.Helper()
	c.do(map[string]any{"op": "close_engine", "id": id})
}

// waitConnect waits for socket id's n-th connect and returns it.
func (c *testClients) waitConnect(id string, n int) nodeReport {
	c.t.Helper()
	var got nodeReport
	c.waitFor(fmt.Sprintf("connect #%d of %s", n, id), func(rs []nodeReport) bool {
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

// waitReport waits for a report of kind ev of socket id that matches ok.
func (c *testClients) waitReport(id, ev, what string, ok func(nodeReport) bool) {
	c.t.Helper()
	c.waitFor(id+" "+what, func(rs []nodeReport) bool {
		return slices.ContainsFunc(rs, func(r nodeReport) bool { return r.ID == id && r.Ev == ev && ok(r) })
	})
}

// waitRefused waits until socket id's CONNECT is refused with message.
func (c *testClients) waitRefused(id, message string) {
	c.t.Helper()
	c.waitReport(id, "connect_error", "refused with "+message, func(r nodeReport) bool { return r.Message == message })
}

// emit sends a client event with an ack and returns the ack's arguments.
func (c *testClients) emit(id, event string, args ...any) []json.RawMessage {
	c.t.Helper()
	c.seq++
	seq := c.seq
	c.do(map[string]any{"op": "emit", "id": id, "event": event, "args": args, "ack": true, "seq": seq})
	var ack nodeReport
	c.waitFor(fmt.Sprintf("ack of %s %s", id, event), func(rs []nodeReport) bool {
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

// joinCalendar emits join:calendar and returns the error_code of the
// refusal ("" when accepted).
func (c *testClients) joinCalendar(id, cal string) string {
	c.t.Helper()
	args := c.emit(id, gateway.EventJoinCalendar, cal)
	var r gateway.Refusal
	if len(args) != 1 || json.Unmarshal(args[0], &r) != nil {
		c.t.Fatalf("ack %s: want one object", args)
	}
	if r.OK {
		return ""
	}
	return r.ErrorCode
}

// of returns socket id's reports of kind ev.
func (c *testClients) of(id, ev string) []nodeReport {
	var out []nodeReport
	for _, r := range c.snapshot() {
		if r.ID == id && r.Ev == ev {
			out = append(out, r)
		}
	}
	return out
}

// socketEvent is a server event one socket received.
type socketEvent struct {
	Event  string
	Data   json.RawMessage
	Offset schema.Offset
	Raw    string // the offset as sent
}

// event decodes an "event" report: every server event carries its payload
// and its offset, last.
func (r *nodeReport) event() (socketEvent, error) {
	if len(r.Args) != 2 {
		return socketEvent{}, fmt.Errorf("%s %s: %d arguments, want payload and offset", r.ID, r.Event, len(r.Args))
	}
	var raw string
	if err := json.Unmarshal(r.Args[1], &raw); err != nil {
		return socketEvent{}, fmt.Errorf("%s %s: last argument %s is not an offset string", r.ID, r.Event, r.Args[1])
	}
	off, err := schema.ParseOffset(raw)
	if err != nil {
		return socketEvent{}, fmt.Errorf("%s %s: %w", r.ID, r.Event, err)
	}
	return socketEvent{Event: r.Event, Data: r.Args[0], Offset: off, Raw: raw}, nil
}

// events returns the server events socket id received, in order.
func (c *testClients) events(id string) []socketEvent {
	c.t.Helper()
	var out []socketEvent
	for _, r := range c.of(id, "event") {
		ev, err := r.event()
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// waitEvent waits until socket id has received an event matching match.
func (c *testClients) waitEvent(id, what string, match func(socketEvent) bool) {
	c.t.Helper()
	c.waitReport(id, "event", "receives "+what, func(r nodeReport) bool {
		ev, err := r.event()
		return err == nil && match(ev)
	})
}

// waitReceived waits until socket id has received n events named event.
func (c *testClients) waitReceived(id, event string, n int) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("%s receiving %d %s", id, n, event), func(rs []nodeReport) bool {
		k := 0
		for _, r := range rs {
			if r.ID == id && r.Ev == "event" && r.Event == event {
				k++
			}
		}
		return k >= n
	})
}

// waitFence waits until every socket received fence number n.
func (c *testClients) waitFence(n int, ids ...string) {
	c.t.Helper()
	want := json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))
	for _, id := range ids {
		c.waitEvent(id, fmt.Sprintf("fence %d", n), func(ev socketEvent) bool {
			return ev.Event == fence && jsonEqual(ev.Data, want)
		})
	}
}

// jsonEqual compares JSON values, not their spelling.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// jsonSubset reports whether every field of want has the same JSON value in
// data (payloads may carry extra fields).
func jsonSubset(data json.RawMessage, want map[string]any) error {
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

// wanted is one event a socket must receive; key names it across sockets
// (every socket receiving the same key must see the same offset).
type wanted struct {
	key    string
	event  string
	fields map[string]any
}

// expectations are, per socket, the exact sequence it must receive, written
// next to the SQL that causes each event.
type expectations struct {
	want map[string][]wanted
	n    int
}

func newExpectations() *expectations { return &expectations{want: map[string][]wanted{}} }

// to adds one event to the sequences of sockets, with the payload fields it
// must carry.
func (x *expectations) to(sockets []string, event string, fields map[string]any) {
	x.n++
	for _, s := range sockets {
		x.want[s] = append(x.want[s], wanted{key: fmt.Sprintf("#%d %s", x.n, event), event: event, fields: fields})
	}
}

// check compares what every socket received with what it must have,
// exactly: same events, same order, payload fields equal, offsets
// increasing, and one offset per event across sockets.
func (x *expectations) check(c *testClients) {
	t := c.t
	t.Helper()
	offsets := map[string]string{}
	ids := make([]string, 0, len(x.want))
	for id := range x.want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		want, got := x.want[id], c.events(id)
		var prev schema.Offset
		for _, ev := range got {
			if ev.Offset.Compare(prev) <= 0 {
				t.Errorf("%s: offset %s after %s", id, ev.Raw, prev)
			}
			prev = ev.Offset
		}
		// Up to the first discrepancy: what follows it would only repeat it.
		for i := 0; i < max(len(got), len(want)); i++ {
			if i >= len(got) {
				t.Errorf("%s: missing %s %v (and %d more)", id, want[i].key, want[i].fields, len(want)-i-1)
				break
			}
			if i >= len(want) {
				t.Errorf("%s: unexpected %s %s at %s (and %d more)", id, got[i].Event, got[i].Data, got[i].Raw, len(got)-i-1)
				break
			}
			if got[i].Event != want[i].event {
				t.Errorf("%s: event %d is %s %s, want %s %v", id, i, got[i].Event, got[i].Data, want[i].key, want[i].fields)
				break
			}
			if err := jsonSubset(got[i].Data, want[i].fields); err != nil {
				t.Errorf("%s: %s: %v", id, want[i].key, err)
			}
			if o, ok := offsets[want[i].key]; ok && o != got[i].Raw {
				t.Errorf("%s: %s has offset %s, another socket got %s", id, want[i].key, got[i].Raw, o)
			}
			offsets[want[i].key] = got[i].Raw
		}
	}
}
