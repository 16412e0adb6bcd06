package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/internal/devenv"
	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

// clusterSlot is the replication slot every node of a bench cluster shares.
const clusterSlot = "koordi_bench_cluster"

// cluster is N `koordi-realtime serve` nodes on 127.0.0.1 sharing one slot
// through a nats-server of their own (a fresh JetStream store per cluster),
// as README "Several nodes" describes; server kind clusterN.
type cluster struct {
	e     *Env
	nats  *natsserver.Server
	nodes []*clusterNode
	slot  string
}

// clusterNode is one node; p is replaced when the node is started again.
type clusterNode struct {
	name, addr, url, bin string
	env                  []string
	p                    *harness.Process
}

// clusterSize is N of a server kind "clusterN" ("cluster" alone: 3).
func clusterSize(kind string) (int, bool) {
	rest, ok := strings.CutPrefix(kind, "cluster")
	if !ok {
		return 0, false
	}
	if rest == "" {
		return 3, true
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// startCluster starts a nats-server and n nodes and waits until every node
// is ready (/readyz) and one of them leads.
func (e *Env) startCluster(ctx context.Context, n int, bin string, env []string) (*cluster, error) {
	if err := dropSlot(ctx, e.DatabaseURL, clusterSlot); err != nil {
		return nil, err
	}
	ns, err := natsserver.Start(ctx, natsserver.Config{})
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	c := &cluster{e: e, nats: ns, slot: clusterSlot}
	extra := append(append([]string(nil), e.ServerEnv...), env...)
	for i := range n {
		port, err := harness.FreePort()
		if err != nil {
			c.stop()
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c.nodes = append(c.nodes, &clusterNode{name: fmt.Sprintf("node%d", i+1), addr: addr, url: "http://" + addr, bin: bin,
			env: append([]string{"DATABASE_URL=" + e.DatabaseURL, "JWT_SECRET=" + e.JWTSecret, "LISTEN_ADDR=" + addr,
				"SLOT_NAME=" + clusterSlot, "PUBLICATION_NAME=" + harness.Publication, "FRONTEND_URL=",
				"NATS_URL=" + ns.URL(), fmt.Sprintf("NODE_NAME=node%d", i+1), "LOG_FORMAT=json"}, extra...)})
		// As `dev --nodes` does: co-located nodes share the cores out
		// unless the variant or this environment says otherwise.
		if procs := devenv.CoLocatedGOMAXPROCS(n, append(os.Environ(), extra...)); procs != "" {
			c.nodes[i].env = append(c.nodes[i].env, procs)
		}
	}
	// The first node alone, so it leads and creates the slot; then the rest.
	if err := c.start(ctx, 0); err != nil {
		c.stop()
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for i := 1; i < n; i++ {
		g.Go(func() error { return c.start(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		c.stop()
		return nil, err
	}
	if _, err := c.waitLeader(ctx, 30*time.Second); err != nil {
		c.stop()
		return nil, err
	}
	e.logf("cluster: %d nodes on %s, nats %s", n, strings.Join(c.urls(), " "), ns.URL())
	return c, nil
}

func (c *cluster) urls() []string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.url)
	}
	return u
}

// start starts node i (again) and waits until it is ready.
func (c *cluster) start(ctx context.Context, i int) error {
	n := c.nodes[i]
	p, err := harness.StartProcess(ctx, n.name, n.url, n.env, "", n.bin, "serve")
	if err != nil {
		return err
	}
	n.p = p
	if err := waitReadyz(ctx, n.url, 60*time.Second); err != nil {
		return fmt.Errorf("%s: %w; output: %s", n.name, err, p.Output())
	}
	return nil
}

// waitReadyz polls url/readyz until it answers 200.
func waitReadyz(ctx context.Context, url string, d time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(d)
	var last string
	for {
		resp, err := client.Get(url + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(b))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz not 200 within %s (last: %s)", d, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaders is the nodes whose /metrics say koordi_cluster_leader 1.
func (c *cluster) leaders() []int {
	client := &http.Client{Timeout: 2 * time.Second}
	var out []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(n.url + "/metrics")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "koordi_cluster_leader 1" {
					mu.Lock()
					out = append(out, i)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// waitLeader waits until exactly one node leads and returns it.
func (c *cluster) waitLeader(ctx context.Context, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		l := c.leaders()
		if len(l) == 1 {
			return l[0], nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("cluster: %d leaders after %s, want 1", len(l), d)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// becameLeader is the time of the first "became leader" record after
// `after` in a JSON log (LOG_FORMAT=json; slog writes milliseconds).
func becameLeader(log string, after time.Time) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"became leader"`) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "became leader" {
			continue
		}
		if rec.Time.After(after) {
			return rec.Time, true
		}
	}
	return time.Time{}, false
}

// stop ends every node, the nats-server and the slot.
func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.p == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); n.p.Stop() }()
	}
	wg.Wait()
	c.nats.Stop()
	_ = dropSlot(context.Background(), c.e.DatabaseURL, c.slot)
}
