package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// TestDevNodes is `make run` with --nodes 2: two nodes on consecutive
// ports behind one local nats-server, one of them leading. Killing the
// leader outright hands the slot to the other, a socket on the survivor
// still receives the next write, the killed node comes back by itself with
// a new pid, and Ctrl-C leaves no process behind.
func TestDevNodes(t *testing.T) {
	pgcluster.Require(t, cluster)
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	natsBin, err := natsserver.Binary()
	if err != nil {
		t.Fatal(err)
	}
	base := freePortPair(t)
	p := &devProc{proc: startProc(t, "dev --nodes", dir,
		devEnv("LISTEN_ADDR=127.0.0.1:"+strconv.Itoa(base), "NATS_SERVER="+natsBin), "dev", "--nodes", "2")}
	interruptAtCleanup(t, p)
	urls := []string{fmt.Sprintf("http://127.0.0.1:%d", base), fmt.Sprintf("http://127.0.0.1:%d", base+1)}
	for _, u := range urls {
		p.waitReady(func() string { return u })
	}
	pids := devNodePids(t, p, 2)

	leader := waitDevLeader(t, urls, -1)
	survivor := 1 - leader
	// The inspector says which node the page talks to and that it leads.
	for i, u := range urls {
		_, body, err := fetch(u + "/inspector/api/stats")
		want := fmt.Sprintf(`"node":"node%d","leader":%t`, i+1, i == leader)
		if err != nil || !strings.Contains(body, want) {
			t.Errorf("node%d's inspector stats lack %s: %v %s", i+1, want, err, body)
		}
	}
	c := devSocket(t, urls[survivor], p.token("sam@demo.koordi.app"))
	devWait(c, "connect", func(r nodeReport) bool { return r.Ev == "connect" })

	if err := syscall.Kill(pids[leader], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := waitDevLeader(t, urls, leader); got != survivor {
		t.Fatalf("node%d leads after node%d was killed, want node%d", got+1, leader+1, survivor+1)
	}
	m := regexp.MustCompile(`(?m)^  database  psql "(\S+)"$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no database URL in the banner:\n%s", p.stdout.String())
	}
	conn, err := pgx.Connect(context.Background(), m[1])
	if err != nil {
		t.Fatal(err)
	}
	eventID := assignDemoEvent(t, conn)
	conn.Close(context.Background())
	devWait(c, "event:assigned through the new leader", func(r nodeReport) bool {
		return r.Ev == "event" && r.Event == "event:assigned" && len(r.Args) == 2 && strings.Contains(string(r.Args[0]), eventID)
	})
	c.close()

	// The killed node is started again and serves once more.
	p.waitReady(func() string { return urls[leader] })
	if !regexp.MustCompile(`node started again.*node=node` + strconv.Itoa(leader+1) + `.*pid=\d+`).MatchString(p.stderr.String()) {
		t.Errorf("the restart of node%d was not logged:\n%s", leader+1, lastLines(p.stderr.String(), 20))
	}

	p.interrupt()
	if left := processesUnder(dir); len(left) > 0 {
		t.Fatalf("processes left after SIGINT:\n%s", strings.Join(left, "\n"))
	}
}

// freePortPair finds two consecutive free ports on 127.0.0.1.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.Addr().(*net.TCPAddr).Port
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		a.Close()
		if err == nil {
			b.Close()
			return port
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

// devNodePids reads the nodes' pids from dev's banner.
func devNodePids(t *testing.T, p *devProc, n int) []int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^  node(\d+)  inspector \S+   pid (\d+)$`)
	deadline := time.Now().Add(waitLimit)
	for {
		ms := re.FindAllStringSubmatch(p.stdout.String(), -1)
		if len(ms) == n {
			pids := make([]int, n)
			for _, m := range ms {
				i, _ := strconv.Atoi(m[1])
				pids[i-1], _ = strconv.Atoi(m[2])
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pids of %d nodes in the banner:\n%s", n, p.stdout.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitDevLeader waits until exactly one node other than not reports
// koordi_cluster_leader 1, and returns its index.
func waitDevLeader(t *testing.T, urls []string, not int) int {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		leader := -1
		for i, u := range urls {
			if i == not {
				continue
			}
			if code, body, err := fetch(u + "/metrics"); err == nil && code == http.StatusOK &&
				regexp.MustCompile(`(?m)^koordi_cluster_leader 1$`).MatchString(body) {
				if leader >= 0 {
					t.Fatalf("node%d and node%d both report leading", leader+1, i+1)
				}
				leader = i
			}
		}
		if leader >= 0 {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node leads (excluding node%d)", not+1)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
