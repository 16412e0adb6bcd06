package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

// PerProcessConns is how many connections one process (a node, a holder,
// the Node reference) is given at most: the open-file limit here is 20,000
// per process, and each also needs a few hundred descriptors of its own.
const PerProcessConns = 16_700

// HoldConfig configures `koordi-bench hold`, one client process of
// cluster-idle.
type HoldConfig struct {
	URLs        []string // client i connects to URLs[(Offset+i) mod len]
	Connections int
	Offset      int // of the first client: its user is (Offset+i) mod Users
	Users       int
	Sources     int
	SourceBase  int
	ReadyEvent  string
	Secret      string
}

// Hold connects cfg.Connections idle sockets, writes "connected N SECONDS"
// to out, holds them until ctx ends, then writes "dropped K" (sockets whose
// connection ended meanwhile) and closes them.
func Hold(ctx context.Context, cfg HoldConfig, out io.Writer) error {
	e := &Env{JWTSecret: cfg.Secret}
	tokens, err := e.tokens(cfg.Users)
	if err != nil {
		return err
	}
	urls := make([]string, len(cfg.URLs))
	for j := range urls {
		urls[j] = cfg.URLs[(cfg.Offset+j)%len(cfg.URLs)]
	}
	f, took, err := connect(context.Background(), fleetConfig{URLs: urls, N: cfg.Connections, Parallel: 100,
		Tokens: func(i int) string { return tokens(cfg.Offset + i) }, ReadyEvent: cfg.ReadyEvent,
		Sources: cfg.Sources, SourceBase: cfg.SourceBase,
		Handle: func(int, []byte, []byte) {}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "connected %d %.3f\n", cfg.Connections, took.Seconds())
	<-ctx.Done()
	dropped := f.runErrs.Load()
	fmt.Fprintf(out, "dropped %d\n", dropped)
	f.close()
	return nil
}

// ClusterIdleConfig configures the cluster-idle scenario.
type ClusterIdleConfig struct {
	// Servers, in run order: a clusterN holds Connections over its N
	// nodes; any other server (koordi, node) holds Connections/N (N of the
	// smallest cluster), the same count per process, so per-connection
	// memory compares at one size.
	Servers     []string
	Connections int
	Holders     int           // client processes; default ceil(per-server count / PerProcessConns)
	Sources     int           // source addresses per holder; default 8
	Hold        time.Duration // idle measurement window; default 30s
	RoomSize    int           // default 100
}

// ClusterIdleRow is one process holding connections: a node, or a single
// server.
type ClusterIdleRow struct {
	Server         string  `json:"server"`
	Node           string  `json:"node"`
	Connections    int     `json:"connections"`
	Holders        int     `json:"holders"`
	ConnectSeconds float64 `json:"connect_seconds"`
	RSSBefore      int64   `json:"rss_before_bytes"`
	RSSAfter       int64   `json:"rss_after_bytes"`
	RSSPerConn     float64 `json:"rss_per_connection_bytes"`
	IdleCores      float64 `json:"idle_cpu_cores"`
	HolderRSS      int64   `json:"holders_rss_bytes"` // the client processes, summed (on the server's first row)
	Dropped        int64   `json:"dropped"`
	Failed         string  `json:"failed,omitempty"`
	Load           string  `json:"loadavg"`
}

// ClusterIdle holds idle connections on every server of cfg.Servers with
// client processes (`koordi-bench hold`, each under the open-file limit)
// and reports RSS per connection and idle CPU of every process.
func ClusterIdle(ctx context.Context, e *Env, cfg ClusterIdleConfig) (*Report, error) {
	if cfg.Sources <= 0 {
		cfg.Sources = 8
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 30 * time.Second
	}
	if cfg.RoomSize <= 0 {
		cfg.RoomSize = 100
	}
	users := min(cfg.Connections, 10_000)
	users -= users % cfg.RoomSize
	if users <= 0 {
		return nil, fmt.Errorf("cluster-idle: %d connections is less than a room", cfg.Connections)
	}
	topo := harness.Topology{Users: users, Calendars: users / cfg.RoomSize, EventsPerCalendar: 1}
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	rep := &Report{Scenario: "cluster-idle", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []ClusterIdleRow
	defer func() { rep.Rows = rows }()
	perProc := cfg.Connections
	for _, s := range cfg.Servers {
		if n, ok := clusterSize(strings.SplitN(strings.SplitN(s, "+", 2)[0], "@", 2)[0]); ok {
			perProc = min(perProc, cfg.Connections/n)
		}
	}
	for _, s := range cfg.Servers {
		n, isCluster := clusterSize(strings.SplitN(strings.SplitN(s, "+", 2)[0], "@", 2)[0])
		count := perProc
		if isCluster {
			count = max(perProc*n, min(cfg.Connections, PerProcessConns*n)) // all of them, the remainder on the first nodes
		}
		got, err := e.clusterIdleOne(ctx, s, count, users, cfg)
		if err != nil {
			e.logf("cluster-idle/%s: %v", s, err)
			got = append(got, ClusterIdleRow{Server: s, Connections: count, Failed: err.Error(), Load: harness.LoadAvg()})
		}
		rows = append(rows, got...)
	}
	// Per-connection RSS: mean over a server's processes, against node's.
	per := map[string][]float64{}
	var order []string
	for _, x := range rows {
		if x.Failed != "" {
			continue
		}
		if per[x.Server] == nil {
			order = append(order, x.Server)
		}
		per[x.Server] = append(per[x.Server], x.RSSPerConn)
	}
	mean := func(v []float64) float64 {
		t := 0.0
		for _, x := range v {
			t += x
		}
		return t / float64(max(len(v), 1))
	}
	for _, s := range order {
		rep.Summary = append(rep.Summary, fmt.Sprintf("%-12s KiB/conn mean %.2f over %d processes", s, mean(per[s])/1024, len(per[s])))
	}
	if nd := mean(per["node"]); len(per["node"]) > 0 && nd > 0 {
		for _, s := range order {
			if s == "node" {
				continue
			}
			v := mean(per[s]) / nd
			rep.Ratios = append(rep.Ratios, Ratio{Figure: fmt.Sprintf("RSS per idle connection, %d per process", perProc), Subject: s, Baseline: "node",
				Value: v, Goal: "<= 0.75", Met: v <= 0.75})
		}
	}
	return rep, nil
}

// holder is one running `koordi-bench hold`.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func (e *Env) clusterIdleOne(ctx context.Context, name string, count, users int, cfg ClusterIdleConfig) ([]ClusterIdleRow, error) {
	srv, err := e.startServer(ctx, name)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	pids, nodes := srv.pids, []string{}
	if len(pids) == 0 {
		pids = []int{srv.pid}
		nodes = []string{name}
	} else {
		for _, n := range srv.cluster.nodes {
			nodes = append(nodes, n.name)
		}
	}
	time.Sleep(500 * time.Millisecond)
	before := make([]int64, len(pids))
	for i, p := range pids {
		before[i], _ = harness.RSS(p)
	}
	nh := cfg.Holders
	if nh <= 0 {
		nh = (count + PerProcessConns - 1) / PerProcessConns
	}
	if 1+nh*cfg.Sources > 255 {
		return nil, fmt.Errorf("%d holders × %d source addresses do not fit in 127.0.0.1-255", nh, cfg.Sources)
	}
	e.logf("cluster-idle/%s: %d connections over %d processes from %d holder processes", name, count, len(pids), nh)
	start := time.Now()
	holders := make([]*holder, nh)
	defer func() {
		for _, h := range holders {
			if h != nil {
				h.stop()
			}
		}
	}()
	off := 0
	for i := range holders {
		n := count / nh
		if i < count%nh {
			n++
		}
		h, err := e.startHolder(HoldConfig{URLs: srv.targets(), Connections: n, Offset: off, Users: users,
			Sources: cfg.Sources, SourceBase: 1 + i*cfg.Sources, ReadyEvent: srv.readyEvent})
		if err != nil {
			return nil, err
		}
		holders[i] = h
		off += n
	}
	g, _ := errgroup.WithContext(ctx)
	for i, h := range holders {
		g.Go(func() error {
			select {
			case l, ok := <-h.lines:
				if !ok || !strings.HasPrefix(l, "connected ") {
					return fmt.Errorf("holder %d: %s", i, l)
				}
				return nil
			case <-time.After(10 * time.Minute):
				return fmt.Errorf("holder %d: not connected in 10 minutes", i)
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	took := time.Since(start)
	e.logf("cluster-idle/%s: %d connected in %.1fs", name, count, took.Seconds())
	time.Sleep(2 * time.Second)
	s0 := make([]procSample, len(pids))
	for i, p := range pids {
		s0[i] = sample(p)
	}
	select {
	case <-time.After(cfg.Hold):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var holderRSS int64
	for _, h := range holders {
		r, _ := harness.RSS(h.cmd.Process.Pid)
		holderRSS += r
	}
	load := harness.LoadAvg()
	rows := make([]ClusterIdleRow, len(pids))
	for i, p := range pids {
		s1 := sample(p)
		c, _ := cores(s0[i], s1)
		per := count / len(pids)
		if i < count%len(pids) {
			per++
		}
		rows[i] = ClusterIdleRow{Server: name, Node: nodes[i], Connections: per, Holders: nh, ConnectSeconds: took.Seconds(),
			RSSBefore: before[i], RSSAfter: s1.serverRSS, RSSPerConn: float64(s1.serverRSS-before[i]) / float64(per), IdleCores: c, Load: load}
		e.logf("cluster-idle/%s %s: %d sockets, RSS %s -> %s (%.2f KiB/conn), %.3f cores idle", name, nodes[i], per,
			mib(before[i]), mib(s1.serverRSS), rows[i].RSSPerConn/1024, c)
	}
	rows[0].HolderRSS = holderRSS
	var dropped int64
	for i, h := range holders {
		h.stdin.Close()
		select {
		case l := <-h.lines:
			if k, ok := strings.CutPrefix(l, "dropped "); ok {
				n, _ := strconv.ParseInt(k, 10, 64)
				dropped += n
			}
		case <-time.After(30 * time.Second):
			e.logf("cluster-idle/%s: holder %d did not report", name, i)
		}
		h.stop()
		holders[i] = nil
	}
	rows[0].Dropped = dropped
	if dropped > 0 {
		return rows, fmt.Errorf("%d connections dropped while idle", dropped)
	}
	return rows, nil
}

// startHolder starts `koordi-bench hold`; its stdout lines arrive on lines,
// closing its stdin ends it.
func (e *Env) startHolder(cfg HoldConfig) (*holder, error) {
	cmd := exec.Command(e.BenchBin, "hold", "--urls", strings.Join(cfg.URLs, ","), "--connections", strconv.Itoa(cfg.Connections),
		"--offset", strconv.Itoa(cfg.Offset), "--users", strconv.Itoa(cfg.Users), "--sources", strconv.Itoa(cfg.Sources),
		"--source-base", strconv.Itoa(cfg.SourceBase), "--ready-event", cfg.ReadyEvent)
	cmd.Env = append(os.Environ(), "JWT_SECRET="+e.JWTSecret)
	cmd.Stderr = e.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &holder{cmd: cmd, stdin: in, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	return h, nil
}

// stop ends the holder (its stdin closed, then SIGKILL after 30 s).
func (h *holder) stop() {
	h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}
