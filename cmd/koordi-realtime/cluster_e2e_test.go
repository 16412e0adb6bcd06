package main

// End-to-end tests of several nodes (issue 11): three serve processes on one
// database and slot, a real nats-server with JetStream (the version go.mod
// pins), the unmodified socket.io-client: WebSocket through a small
// balancer that sends each new connection to a live node, polling pinned to
// one node, as with sticky sessions.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
	"github.com/koordi/koordi-realtime/schema"
)

// startNATS runs the pinned nats-server for one test.
func startNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	s, err := natsserver.Start(context.Background(), natsserver.Config{Dir: t.TempDir()})
	if err != nil {
		unavailable(t, "nats-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// nodes is n serve processes of one service.
type nodes struct {
	t     *testing.T
	db    *testDB
	nats  *natsserver.Server
	nodes []*testServer
	lb    *balancer
}

// startCluster starts n nodes on db and nats, one after the other, each
// ready (its feed caught up) before the next.
func startCluster(t *testing.T, db *testDB, nats *natsserver.Server, n int, vars ...string) *nodes {
	t.Helper()
	cl := &nodes{t: t, db: db, nats: nats}
	for i := range n {
		env := append([]string{"NATS_URL=" + nats.URL(), fmt.Sprintf("NODE_NAME=node%d", i+1), "LOG_LEVEL=info"}, vars...)
		cl.nodes = append(cl.nodes, startServer(t, db, env...))
	}
	// Before any node's cleanup drops the slot: every node gone first.
	t.Cleanup(func() {
		for _, s := range cl.nodes {
			if s.proc.running() {
				s.kill()
			}
		}
	})
	cl.lb = startBalancer(t, cl)
	return cl
}

// leader is the index of the node whose koordi_cluster_leader is 1, or -1.
func (cl *nodes) leader() int {
	for i, s := range cl.nodes {
		if !s.proc.running() {
			continue
		}
		code, body, err := fetch(s.url() + "/metrics")
		if err == nil && code == http.StatusOK && strings.Contains(body, "\nkoordi_cluster_leader 1") {
			return i
		}
	}
	return -1
}

// waitLeader waits for a leader other than not (-1: any) and returns it.
func (cl *nodes) waitLeader(not int) int {
	cl.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if l := cl.leader(); l >= 0 && l != not {
			return l
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("no leader after %s", waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// balancer is a TCP proxy: each new connection goes to the next live node
// (round robin, skipping nodes that refuse), as an L4 balancer would.
type balancer struct {
	ln     net.Listener
	cl     *nodes
	mu     sync.Mutex
	next   int
	prefer int // the node for the next connection, if >= 0
}

func startBalancer(t *testing.T, cl *nodes) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, cl: cl, prefer: -1}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); b.proxy(c) }()
		}
	}()
	return b
}

func (b *balancer) url() string { return "http://" + b.ln.Addr().String() }

// to sends the next new connection to node i (a socket that must start on
// a given node, and still reconnect through the balancer).
func (b *balancer) to(i int) *balancer {
	b.mu.Lock()
	b.prefer = i
	b.mu.Unlock()
	return b
}

func (b *balancer) proxy(c net.Conn) {
	defer c.Close()
	var up net.Conn
	for range len(b.cl.nodes) {
		b.mu.Lock()
		i := b.next
		if b.prefer >= 0 {
			i, b.prefer = b.prefer, -1
		} else {
			b.next++
		}
		addr := b.cl.nodes[i%len(b.cl.nodes)].addr
		b.mu.Unlock()
		var err error
		if up, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// connectTo opens socket id on a given server (a node, or the balancer).
func (c *testClients) connectTo(id, url, token string, transports ...string) nodeReport {
	c.t.Helper()
	cmd := map[string]any{"op": "connect", "id": id, "token": token, "url": url,
		"reconnectionDelayMax": 500, "reconnectionAttempts": "Infinity"}
	if len(transports) > 0 {
		cmd["transports"] = transports
	}
	c.do(cmd)
	return c.waitConnect(id, 1)
}

// newClusterScenario: the scenario's database, nats and three nodes; ada's
// socket over WebSocket through the balancer, bob's polling pinned to a node
// that is not the leader, cyd's WebSocket on the leader.
func newClusterScenario(t *testing.T, vars ...string) (*nodes, *testClients, int) {
	t.Helper()
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	db.seedScenario()
	db.setup()
	cl := startCluster(t, db, startNATS(t), 3, vars...)
	leader := cl.waitLeader(-1)
	c := startClients(t, cl.lb.url())
	c.connectTo("ada", cl.lb.url(), token(t, adaID, time.Hour), "websocket")
	c.connectTo("bob", cl.nodes[(leader+1)%3].url(), token(t, bobID, time.Hour), "polling")
	c.connectTo("cyd", cl.lb.to(leader).url(), token(t, cydID, time.Hour), "websocket")
	return cl, c, leader
}

// TestClusterFanOutAndMoves: every socket on every node gets exactly its
// rooms' events, once, in commit order; a membership accepted in the same
// transaction as an event of the calendar moves the user's sockets on every
// node before that event, and a removal takes them out before the next.
func TestClusterFanOutAndMoves(t *testing.T) {
	cl, c, _ := newClusterScenario(t)
	db := cl.db
	x := newExpectations()
	db.exec(`UPDATE events SET title = 'one' WHERE id = $1`, practice)
	x.to([]string{"ada", "bob"}, schema.EventUpdated, map[string]any{"event_title": "one"})
	db.exec(`UPDATE events SET title = 'lesson one' WHERE id = $1`, lesson)
	x.to([]string{"bob", "cyd"}, schema.EventUpdated, map[string]any{"event_title": "lesson one"})
	// cyd joins Soccer together with an event of it.
	db.exec(`BEGIN; ` + acceptedSQL(soccer, cydID, adaID) + `; UPDATE events SET title = 'two' WHERE id = '` + practice + `'; COMMIT`)
	x.to([]string{"ada", "bob", "cyd"}, schema.MemberAdded, map[string]any{"user_id": cydID})
	x.to([]string{"ada", "bob", "cyd"}, schema.EventUpdated, map[string]any{"event_title": "two"})
	// bob leaves Soccer together with an event of it.
	db.exec(`BEGIN; DELETE FROM event_calendar_memberships WHERE event_calendar_id = '` + soccer + `' AND user_id = '` + bobID + `'; UPDATE events SET title = 'three' WHERE id = '` + practice + `'; COMMIT`)
	x.to([]string{"ada", "cyd"}, schema.MemberRemoved, map[string]any{"user_id": bobID})
	x.to([]string{"bob"}, schema.MemberRemoved, map[string]any{"user_id": bobID})
	x.to([]string{"ada", "cyd"}, schema.EventUpdated, map[string]any{"event_title": "three"})
	db.emitFence(1, adaID, bobID, cydID)
	for _, id := range []string{"ada", "bob", "cyd"} {
		x.to([]string{id}, fence, map[string]any{"n": 1}) // one event per user room
	}
	c.waitFence(1, "ada", "bob", "cyd")
	x.check(c)
}

// TestClusterLeaderKill: the leader killed with SIGKILL under a steady
// write load: a standby streams, every commit reaches every socket once, in
// order, and the sockets of the dead node reconnect elsewhere with
// recovered === true and what they missed.
func TestClusterLeaderKill(t *testing.T) {
	cl, c, leader := newClusterScenario(t)
	w := startWriter(t, cl.db, practice, 400)
	c.waitReceived("ada", schema.EventUpdated, 100)
	killedAt := time.Now()
	cl.nodes[leader].kill()
	next := cl.waitLeader(leader)
	t.Logf("takeover after SIGKILL: node%d leads %s after the kill", next+1, time.Since(killedAt).Round(time.Millisecond))
	w.wait(t)
	for _, id := range []string{"ada", "bob"} {
		w.waitLast(c, id)
		w.check(c, id)
	}
	if r := c.waitConnect("cyd", 2); !r.Recovered {
		t.Errorf("cyd, on the killed leader, reconnected elsewhere with recovered = false")
	}
	checkOrdered(t, c, "cyd")
}

// TestClusterLeaderSIGTERM: a leader stopped with SIGTERM exits 0 and a
// standby takes over within 2 s.
func TestClusterLeaderSIGTERM(t *testing.T) {
	cl, c, leader := newClusterScenario(t)
	stopped := time.Now()
	if err := cl.nodes[leader].proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next := cl.waitLeader(leader)
	took := time.Since(stopped)
	t.Logf("takeover after SIGTERM: %s", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("takeover took %s, want within 2s", took)
	}
	select {
	case <-cl.nodes[leader].proc.done:
		if err := cl.nodes[leader].proc.err; err != nil {
			t.Errorf("the old leader: %v, want exit 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("the old leader still runs 15 s after SIGTERM")
	}
	cl.db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	c.waitEvent("ada", "after", func(ev socketEvent) bool { return title(ev) == "after" })
	_ = next
}

// TestClusterNATSRestart: nats-server killed and restarted under writes:
// nothing is lost, sockets stay connected.
func TestClusterNATSRestart(t *testing.T) {
	cl, c, _ := newClusterScenario(t)
	w := startWriter(t, cl.db, practice, 400)
	c.waitReceived("ada", schema.EventUpdated, 100)
	cl.nats.Kill()
	time.Sleep(2 * time.Second)
	if err := cl.nats.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.wait(t)
	checkStayedConnected(t, c, w, "ada", "bob")
}

// TestClusterPostgresOutage: PostgreSQL down for 3 s under writes: no node
// exits (a standby's failed connect is an outage, not a database that was
// never set up), a node leads again, and every commit reaches every socket.
func TestClusterPostgresOutage(t *testing.T) {
	cl, c, _ := newClusterScenario(t)
	w := startWriter(t, cl.db, practice, 300)
	c.waitReceived("ada", schema.EventUpdated, 50)
	if err := cluster.RestartAfter(context.Background(), "immediate", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	w.wait(t)
	for _, id := range []string{"ada", "bob"} {
		w.waitLast(c, id)
		w.check(c, id)
	}
	for i, s := range cl.nodes {
		if !s.proc.running() {
			t.Errorf("node%d exited during the outage: %v\n%s", i+1, s.proc.err, lastLines(s.proc.stderr.String(), 20))
		}
	}
}

// checkStayedConnected: each socket got every commit of w once, in order,
// without a disconnect — NATS being down must not reach the sockets.
func checkStayedConnected(t *testing.T, c *testClients, w *writer, ids ...string) {
	t.Helper()
	for _, id := range ids {
		w.waitLast(c, id)
		w.check(c, id)
		if n := len(c.of(id, "disconnect")); n != 0 {
			t.Errorf("%s disconnected %d times while NATS was down", id, n)
		}
	}
}

// TestClusterNATSOutage: NATS unreachable for 30 s under writes: the sockets
// stay connected, /readyz answers 503 on the nodes, the leader's memory stays
// bounded (it stops decoding instead of holding what it cannot publish), and
// when NATS is back every commit reaches every socket once, in order.
func TestClusterNATSOutage(t *testing.T) {
	cl, c, _ := newClusterScenario(t)
	w := startWriter(t, cl.db, practice, 600)
	c.waitReceived("ada", schema.EventUpdated, 50)
	rssBefore := maxRSS(cl)
	cl.nats.Kill()
	waitReadyz(t, cl.nodes[0], http.StatusServiceUnavailable, "")
	time.Sleep(30 * time.Second)
	rssDuring := maxRSS(cl)
	if err := cl.nats.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.wait(t)
	checkStayedConnected(t, c, w, "ada", "bob")
	t.Logf("largest node RSS: %d KiB before the outage, %d KiB after 30 s of it", rssBefore>>10, rssDuring>>10)
	if rssDuring > rssBefore+64<<20 {
		t.Errorf("a node grew by %d MiB while NATS was down", (rssDuring-rssBefore)>>20)
	}
	for _, s := range cl.nodes {
		waitReadyz(t, s, http.StatusOK, "ready")
	}
}

// maxRSS is the largest resident set of the running nodes.
func maxRSS(cl *nodes) int64 {
	var top int64
	for _, s := range cl.nodes {
		if !s.proc.running() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", s.proc.cmd.Process.Pid))
		if err != nil {
			continue
		}
		var size, rss int64
		fmt.Sscan(string(b), &size, &rss)
		top = max(top, rss*int64(os.Getpagesize()))
	}
	return top
}

// TestClusterLateNodeRecovers: a node started after the events reads the
// window's history from the feed, so a session of another node recovers on
// it, with what it missed.
func TestClusterLateNodeRecovers(t *testing.T) {
	cl, c, leader := newClusterScenario(t)
	other := (leader + 2) % 3
	// ada's socket starts on a node that is not the leader, and is left
	// there.
	c.connectTo("ada2", cl.lb.to(other).url(), token(t, adaID, time.Hour), "websocket")
	cl.db.exec(`UPDATE events SET title = 'seen' WHERE id = $1`, practice)
	c.waitEvent("ada2", "seen", func(ev socketEvent) bool { return title(ev) == "seen" })
	cl.nodes[other].kill()
	cl.db.exec(`UPDATE events SET title = 'missed' WHERE id = $1`, practice)
	c.waitEvent("ada", "missed", func(ev socketEvent) bool { return title(ev) == "missed" })
	// A fourth node, started now; ada2's reconnect goes to it.
	late := startServer(t, cl.db, "NATS_URL="+cl.nats.URL(), "NODE_NAME=late", "LOG_LEVEL=info")
	cl.lb.mu.Lock() // the balancer reads the nodes
	cl.nodes[other] = late
	cl.lb.mu.Unlock()
	t.Cleanup(func() { // every node gone before late's cleanup drops the slot
		for _, s := range cl.nodes {
			if s.proc.running() {
				s.kill()
			}
		}
	})
	cl.lb.to(other)
	if r := c.waitConnect("ada2", 2); !r.Recovered {
		t.Fatal("ada2 did not recover on the node started after the events")
	}
	c.waitEvent("ada2", "missed", func(ev socketEvent) bool { return title(ev) == "missed" })
	checkOrdered(t, c, "ada2")
}

// nameFields are the payload fields derivation fills from its state of
// users and calendars rather than from the changed row.
var nameFields = []string{"calendar_name", "user_name", "user_email", "inviter_name"}

// restatedByTakeover accepts the one way the new leader's events may differ
// from a single uninterrupted stream (the README's limits): a transaction
// committed before the new leader loaded its state (before takeover) but
// not published by the old one is derived with names as of that load — a
// calendar or user deleted meanwhile has none, a renamed one its new name.
// So only name fields may differ, and only to a name the database holds at
// the end of the test (or to none).
func restatedByTakeover(db *testDB, takeover uint64) func(socketEvent, line) bool {
	// What the database holds at the end, by id: a restated name must be
	// the one of the row its event names.
	calName, userName, userEmail, userNames := map[string]string{}, map[string]string{}, map[string]string{}, map[string]bool{}
	rows, err := db.conn.Query(context.Background(), `
		SELECT 'c', id::text, name, '' FROM event_calendars UNION ALL
		SELECT 'u', id::text, name, email FROM users`)
	if err != nil {
		db.t.Fatal(err)
	}
	for rows.Next() {
		var kind, id, name, email string
		if err := rows.Scan(&kind, &id, &name, &email); err != nil {
			db.t.Fatal(err)
		}
		if kind == "c" {
			calName[id] = name
		} else {
			userName[id], userEmail[id], userNames[name] = name, email, true
		}
	}
	if rows.Close(); rows.Err() != nil {
		db.t.Fatal(rows.Err())
	}
	// now is what a load at the end would give for field k of payload g;
	// ok false where the payload names no row to compare with.
	now := func(g map[string]any, k string) (string, bool) {
		cal, _ := g["calendar_id"].(string)
		user, _ := g["user_id"].(string)
		switch k {
		case "calendar_name":
			return calName[cal], cal != "" // "" for a calendar that is gone
		case "user_name":
			n, ok := userName[user]
			return n, ok
		case "user_email":
			e, ok := userEmail[user]
			return e, ok
		}
		return "", false
	}
	return func(got socketEvent, exp line) bool {
		if got.Offset.LSN >= takeover {
			return false
		}
		var g, e map[string]any
		if json.Unmarshal(got.Data, &g) != nil || json.Unmarshal(exp.Data, &e) != nil || len(g) != len(e) {
			return false
		}
		for k, ev := range e {
			gv, ok := g[k]
			if !ok {
				return false
			}
			if reflect.DeepEqual(gv, ev) {
				continue
			}
			name, isString := gv.(string)
			if !slices.Contains(nameFields, k) || !isString {
				return false
			}
			if want, ok := now(g, k); ok && name != want {
				return false
			}
			if k == "inviter_name" && !userNames[name] { // the payload has no inviter id
				return false
			}
		}
		db.t.Logf("%s %s restated by the takeover: %s (a single stream: %s)", got.Raw, got.Event, got.Data, exp.Data)
		return true
	}
}

// TestClusterRandomOperations is TestServeRandomOperations across three
// nodes, with the leader killed in the middle: WebSocket sockets through the
// balancer (the dead node's reconnect to the others and recover), polling
// ones pinned to the nodes that stay; afterwards every socket must have
// received exactly the events of the rooms its user was in at each event's
// commit, once, in commit order.
func TestClusterRandomOperations(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -run TestClusterRandomOperations -e2e.seed=%d)", seed, seed)
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	m := newModel(t, db, seed)
	db.setup()
	cl := startCluster(t, db, startNATS(t), 3)
	leader := cl.waitLeader(-1)
	oracle := startOracle(t, db)
	c := startClients(t, cl.lb.url())
	socketsOf, sockets := m.connect(c, func(i int, transports []string) string {
		if len(transports) == 1 && transports[0] == "websocket" {
			return cl.lb.to(i % 3).url() // the leader's too
		}
		return cl.nodes[(leader+1+i%2)%3].url() // sticky: a node that stays
	})
	m.run(100)
	cl.nodes[leader].kill()
	m.run(50)
	cl.waitLeader(leader)
	takeover := db.currentLSN()
	m.run(50)
	t.Logf("operations: %v; node%d killed after 100", m.counts, leader+1)
	db.emitFence(1, m.users...)
	c.waitFence(1, sockets...)
	waitUntil(t, "tail printing the fence", func() bool { return strings.Count(oracle.stdout.String(), `"`+fence+`"`) == len(m.users) })
	want := m.replay(parseLines(t, oracle.stdout.String()))
	delivered := checkDelivered(c, socketsOf, want, restatedByTakeover(db, takeover))
	t.Logf("%d delivered to %d sockets", delivered, len(sockets))
}

// waitResets waits until every socket of ids has had a sync:reset, and
// checks each had exactly one, for reason.
func waitResets(t *testing.T, c *testClients, reason string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		c.waitEvent(id, "sync:reset", func(ev socketEvent) bool { return ev.Event == schema.SyncReset })
		if got := resets(c, id); len(got) != 1 || got[0] != reason {
			t.Errorf("%s: sync:reset %v, want one %s", id, got, reason)
		}
	}
}

// TestClusterTableOutOfPublication: a watched table taken out of the
// publication and put back under a running cluster is a gap for every
// node's sockets (sync:reset {publication_changed}), the leader keeps its
// term (the reset goes through the feed in order), and events flow again.
func TestClusterTableOutOfPublication(t *testing.T) {
	cl, c, leader := newClusterScenario(t, "TABLE_CHECK_INTERVAL=200ms")
	db := cl.db
	db.exec(`ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	waitReadyz(t, cl.nodes[leader], http.StatusServiceUnavailable, "does not carry events")
	db.exec(`UPDATE events SET title = 'unseen' WHERE id = $1`, practice)
	db.exec(`ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	waitResets(t, c, "publication_changed", "ada", "bob", "cyd")
	db.exec(`UPDATE events SET title = 'seen' WHERE id = $1`, practice)
	c.waitEvent("ada", "seen", func(ev socketEvent) bool { return title(ev) == "seen" })
	c.waitEvent("bob", "seen", func(ev socketEvent) bool { return title(ev) == "seen" })
	if l := cl.leader(); l != leader {
		t.Errorf("node%d leads after the repair, want node%d still: the term should go on", l+1, leader+1)
	}
}

// TestClusterStreamDeleted: the JetStream stream deleted under an idle
// cluster: the nodes reading the feed create it again, every node notices
// the new stream and tells its sockets to refetch (sync:reset
// {feed_recreated}), all are ready again, sockets stay connected, and
// events flow through the new stream (the leader's first publish after it
// fails on the old tail and its next term goes on from the new one).
func TestClusterStreamDeleted(t *testing.T) {
	cl, c, _ := newClusterScenario(t)
	db := cl.db
	db.exec(`UPDATE events SET title = 'before' WHERE id = $1`, practice)
	c.waitEvent("ada", "before", func(ev socketEvent) bool { return title(ev) == "before" })
	nc, err := nats.Connect(cl.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "KOORDI_REALTIME"); err != nil {
		t.Fatal(err)
	}
	// Nothing is written: a leader with nothing to publish does not notice,
	// the nodes reading the feed do.
	waitResets(t, c, "feed_recreated", "ada", "bob", "cyd")
	for _, n := range cl.nodes {
		waitReadyz(t, n, http.StatusOK, "ready")
	}
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	for _, id := range []string{"ada", "bob"} {
		c.waitEvent(id, "after", func(ev socketEvent) bool { return title(ev) == "after" })
		if n := len(c.of(id, "connect")); n != 1 {
			t.Errorf("%s connected %d times: the sockets should have stayed", id, n)
		}
	}
}

// gapWhileNATSDown kills NATS, then takes the events table out of the
// publication and back while the leader cannot publish, and waits for the
// leader to log logLine about the gap it could not publish.
func gapWhileNATSDown(t *testing.T, cl *nodes, leader int, logLine string) {
	t.Helper()
	cl.nats.Kill()
	waitReadyz(t, cl.nodes[leader], http.StatusServiceUnavailable, "")
	cl.db.exec(`ALTER PUBLICATION koordi_realtime DROP TABLE events`)
	cl.nodes[leader].waitLog(t, "watched table cannot be streamed fully")
	cl.db.exec(`ALTER PUBLICATION koordi_realtime ADD TABLE events`)
	cl.nodes[leader].waitLog(t, logLine)
}

// TestClusterGapReportedByNextLeader: a gap its leader found while NATS
// was down, and that leader killed before NATS returns, is reported by the
// node that leads next: the leader recorded it in the stream, and the next
// one decodes it from the slot, which was never confirmed past it. Before,
// it was owed by the dead node alone, and never reported.
func TestClusterGapReportedByNextLeader(t *testing.T) {
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	db.seedScenario()
	db.setup()
	cl := startCluster(t, db, startNATS(t), 2, "TABLE_CHECK_INTERVAL=200ms")
	lead := cl.waitLeader(-1)
	other := 1 - lead
	c := startClients(t, cl.lb.url())
	c.connectTo("ada", cl.nodes[other].url(), token(t, adaID, time.Hour), "websocket")
	gapWhileNATSDown(t, cl, lead, "recorded it in the stream for the next leader")
	cl.nodes[lead].kill()
	if err := cl.nats.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := cl.waitLeader(lead); l != other {
		t.Fatalf("leader %d, want %d", l, other)
	}
	waitResets(t, c, "publication_changed", "ada")
	cl.nodes[other].waitLog(t, "reporting a gap an earlier session recorded in the stream")
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	c.waitEvent("ada", "after", func(ev socketEvent) bool { return title(ev) == "after" })
	if got := resets(c, "ada"); len(got) != 1 {
		t.Errorf("sync:reset %v, want publication_changed once", got)
	}
	if n := len(c.of("ada", "connect")); n != 1 {
		t.Errorf("ada connected %d times: her socket should have stayed", n)
	}
}

// TestClusterResetOwedAcrossTerms: a gap found while NATS is down (a table
// back in the publication) cannot be published, and its failure ends the
// term; the node's next term, once NATS is back, publishes it, so the
// sockets get sync:reset {publication_changed} once instead of never.
func TestClusterResetOwedAcrossTerms(t *testing.T) {
	requireNode(t, "socket.io-client")
	db := newTestDB(t)
	db.seedScenario()
	db.setup()
	cl := startCluster(t, db, startNATS(t), 1, "TABLE_CHECK_INTERVAL=200ms")
	cl.waitLeader(-1)
	c := startClients(t, cl.lb.url())
	c.connectTo("ada", cl.nodes[0].url(), token(t, adaID, time.Hour), "websocket")
	gapWhileNATSDown(t, cl, 0, "could not publish a gap to the feed")
	if err := cl.nats.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitResets(t, c, "publication_changed", "ada")
	db.exec(`UPDATE events SET title = 'after' WHERE id = $1`, practice)
	c.waitEvent("ada", "after", func(ev socketEvent) bool { return title(ev) == "after" })
	if got := resets(c, "ada"); len(got) != 1 {
		t.Errorf("sync:reset %v, want publication_changed once", got)
	}
}
