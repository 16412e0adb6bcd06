package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

// FailoverConfig configures the failover scenario.
type FailoverConfig struct {
	// Servers are clusterN specs (default cluster3), each run in turn with
	// its own Kills (cluster3,cluster3+REPLAY_WINDOW=10s,… compares
	// variants in one command; list one twice for ABBA).
	Servers        []string
	Kills          int           // kills per signal (SIGKILL, SIGTERM, alternating); default 20
	Rate           int           // commits/s written throughout, one room; default 100
	Writers        int           // writer connections; default 4
	ClientsPerNode int           // sockets per node, all in the one room; default 10
	Settle         time.Duration // after a restarted node's sockets connect, before the next kill; default 2s
	// KillAfter is how long the writes run before the first kill (at
	// least Settle): a new leader decodes again up to REPLAY_WINDOW of
	// WAL, so takeovers reach their steady cost only after one window.
	KillAfter time.Duration
	Sources   int
}

// FailoverRow is one kill.
type FailoverRow struct {
	Server string `json:"server"`
	Round  int    `json:"round"`
	// Running is how long the writes had been going at the kill: a new
	// leader decodes again up to REPLAY_WINDOW of them.
	Running   float64 `json:"writing_seconds"`
	Signal    string  `json:"signal"`
	Killed    string  `json:"killed"`
	NewLeader string  `json:"new_leader"`
	// LeaderMS is from the signal to the "became leader" record of the new
	// leader's log (its clock is this machine's; milliseconds); -1: none
	// within 20 s.
	LeaderMS float64 `json:"became_leader_ms"`
	// DeliveryMS is from the signal to the first receipt, on a socket of a
	// surviving node, of an event whose write started after the signal;
	// -1: none within 20 s.
	DeliveryMS float64 `json:"first_delivery_ms"`
	// WorstMS is the highest write-to-receive latency on surviving nodes
	// of the commits written from 1 s before the signal to 3 s after.
	WorstMS float64 `json:"worst_latency_ms"`
	// ExitMS is from the signal until the killed process exited.
	ExitMS float64 `json:"exit_ms"`
	// RestartSeconds is starting the killed node again until /readyz.
	RestartSeconds float64 `json:"restart_seconds"`
	Load           string  `json:"loadavg"`
}

// FailoverAccounting checks every commit of the kill windows against every
// socket that was connected throughout the window.
type FailoverAccounting struct {
	Commits      int64 `json:"commits"`        // written during the accounted windows
	CommitsNone  int64 `json:"commits_lost"`   // reached no accountable socket
	Expected     int64 `json:"expected"`       // commits × accountable sockets, summed over windows
	Delivered    int64 `json:"delivered"`      // of those, received (once or more)
	Lost         int64 `json:"lost"`           // expected, never received
	Duplicates   int64 `json:"duplicates"`     // received more than once (extra copies)
	SocketRounds int64 `json:"socket_windows"` // accountable (socket, window) pairs
}

// failoverFleet is the sockets connected to one node in one generation.
type failoverFleet struct {
	node        int
	f           *fleet
	connectedAt int64
	recs        [][]receipt
}

type receipt struct{ stamp, at int64 }

// commitRec is one commit of the writer: its stamp and when it returned.
type commitRec struct{ stamp, done int64 }

// Failover runs a cluster under a steady write load and kills its leader
// again and again, alternating SIGKILL and SIGTERM, restarting the killed
// node each time, and measures the takeover two ways (see FailoverRow).
func Failover(ctx context.Context, e *Env, cfg FailoverConfig) (*Report, error) {
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{"cluster3"}
	}
	if cfg.Kills <= 0 {
		cfg.Kills = 20
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 100
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.ClientsPerNode <= 0 {
		cfg.ClientsPerNode = 10
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 2 * time.Second
	}
	nodes := 0
	for _, name := range cfg.Servers {
		spec, err := parseServerSpec(name)
		if err != nil {
			return nil, err
		}
		n, ok := clusterSize(spec.kind)
		if !ok || n < 2 {
			return nil, fmt.Errorf("failover: server %q is not a cluster of two or more (clusterN)", name)
		}
		nodes = max(nodes, n)
	}
	topo := harness.Topology{Users: cfg.ClientsPerNode * nodes, Calendars: 1, EventsPerCalendar: 100}
	if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(topo.Users)
	if err != nil {
		return nil, err
	}
	rep := &Report{Scenario: "failover", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []FailoverRow
	accs := map[string]*FailoverAccounting{}
	var order []string
	defer func() { rep.Rows, rep.Extra = rows, accs }()
	for _, name := range cfg.Servers {
		got, acc, err := e.failoverOne(ctx, name, cfg, topo, tokens)
		rows = append(rows, got...)
		if a := accs[name]; a == nil {
			accs[name] = &FailoverAccounting{}
			order = append(order, name)
		}
		a := accs[name]
		a.Commits += acc.Commits
		a.CommitsNone += acc.CommitsNone
		a.Expected += acc.Expected
		a.Delivered += acc.Delivered
		a.Lost += acc.Lost
		a.Duplicates += acc.Duplicates
		a.SocketRounds += acc.SocketRounds
		if err != nil {
			return rep, fmt.Errorf("failover on %s: %w", name, err)
		}
	}
	for _, name := range order {
		var mine []FailoverRow
		for _, r := range rows {
			if r.Server == name {
				mine = append(mine, r)
			}
		}
		acc := *accs[name]
		rep.Summary = append(rep.Summary, failoverSummary(name, mine, acc)...)
		if acc.Lost > 0 || acc.CommitsNone > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "lost deliveries", Subject: name, Baseline: "expected",
				Value: float64(acc.Lost) / float64(max(acc.Expected, 1)), Goal: "0", Met: false})
		}
		if acc.Duplicates > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "duplicate deliveries", Subject: name, Baseline: "expected",
				Value: float64(acc.Duplicates) / float64(max(acc.Expected, 1)), Goal: "0", Met: false})
		}
	}
	return rep, nil
}

// failoverOne is Failover on one cluster.
func (e *Env) failoverOne(ctx context.Context, name string, cfg FailoverConfig, topo harness.Topology, tokens func(int) string) ([]FailoverRow, FailoverAccounting, error) {
	srv, err := e.startServer(ctx, name)
	if err != nil {
		return nil, FailoverAccounting{}, err
	}
	defer srv.stop()
	c := srv.cluster
	nodes := len(c.nodes)

	var (
		killNs     atomic.Int64
		killedNode atomic.Int64
		firstAt    atomic.Int64
		fleetsMu   sync.Mutex
		fleets     []*failoverFleet
	)
	killNs.Store(math.MaxInt64)
	killedNode.Store(-1)
	connectNode := func(node int) error {
		ff := &failoverFleet{node: node, recs: make([][]receipt, cfg.ClientsPerNode)}
		f, _, err := connect(ctx, fleetConfig{URL: c.nodes[node].url, N: cfg.ClientsPerNode, Sources: cfg.Sources,
			Tokens: func(i int) string { return tokens(node*cfg.ClientsPerNode + i) },
			Handle: func(i int, name, args []byte) {
				if string(name) != "event:updated" {
					return
				}
				now := time.Now().UnixNano()
				ns, ok := parseStamp(args)
				if !ok {
					return
				}
				ff.recs[i] = append(ff.recs[i], receipt{ns, now})
				if ns > killNs.Load() && int64(node) != killedNode.Load() && firstAt.Load() == 0 {
					firstAt.CompareAndSwap(0, now)
				}
			}})
		if err != nil {
			return fmt.Errorf("connect to %s: %w", c.nodes[node].name, err)
		}
		ff.f, ff.connectedAt = f, time.Now().UnixNano()
		fleetsMu.Lock()
		fleets = append(fleets, ff)
		fleetsMu.Unlock()
		return nil
	}
	closeAll := func() {
		for _, ff := range fleets {
			ff.f.close()
		}
	}
	for i := range c.nodes {
		if err := connectNode(i); err != nil {
			closeAll()
			return nil, FailoverAccounting{}, err
		}
	}
	e.logf("failover: %d nodes, %d sockets each, writing %d commits/s", nodes, cfg.ClientsPerNode, cfg.Rate)
	stopWrite := make(chan struct{})
	var commits []commitRec
	var writeErr error
	writeDone := make(chan struct{})
	go func() {
		defer close(writeDone)
		commits, writeErr = writeSteady(ctx, e.DatabaseURL, topo, cfg.Rate, cfg.Writers, stopWrite)
	}()
	writeStart := time.Now()
	var rows []FailoverRow
	var kills []time.Time
	fail := func(err error) ([]FailoverRow, FailoverAccounting, error) {
		close(stopWrite)
		<-writeDone
		closeAll()
		return rows, FailoverAccounting{}, err
	}
	if cfg.KillAfter > cfg.Settle {
		select {
		case <-time.After(cfg.KillAfter - cfg.Settle):
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	for r := 0; r < 2*cfg.Kills; r++ {
		sig, sigName := syscall.Signal(syscall.SIGKILL), "SIGKILL"
		if r%2 == 1 {
			sig, sigName = syscall.SIGTERM, "SIGTERM"
		}
		select {
		case <-time.After(cfg.Settle):
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-writeDone:
			return fail(fmt.Errorf("writer stopped: %v", writeErr))
		}
		l, err := c.waitLeader(ctx, 20*time.Second)
		if err != nil {
			return fail(err)
		}
		killed := c.nodes[l]
		row := FailoverRow{Server: name, Round: r + 1, Signal: sigName, Killed: killed.name, LeaderMS: -1, DeliveryMS: -1}
		firstAt.Store(0)
		killedNode.Store(int64(l))
		t := time.Now()
		row.Running = t.Sub(writeStart).Seconds()
		killNs.Store(t.UnixNano())
		kills = append(kills, t)
		if err := killed.p.Signal(sig); err != nil {
			return fail(err)
		}
		deadline := t.Add(20 * time.Second)
		exited, seenLeader := false, false
		for time.Now().Before(deadline) && (!exited || firstAt.Load() == 0 || !seenLeader) {
			if !exited {
				select {
				case <-killed.p.Done():
					exited = true
					row.ExitMS = float64(time.Since(t)) / 1e6
				default:
				}
			}
			if !seenLeader {
				for i, n := range c.nodes {
					if i == l {
						continue
					}
					if at, ok := becameLeader(n.p.Log(), t); ok {
						seenLeader = true
						row.NewLeader = n.name
						row.LeaderMS = float64(at.Sub(t)) / 1e6
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		if a := firstAt.Load(); a != 0 {
			row.DeliveryMS = float64(a-t.UnixNano()) / 1e6
		}
		if !exited {
			<-killed.p.Done()
			row.ExitMS = float64(time.Since(t)) / 1e6
		}
		// Nothing committed from here on counts as "after the kill" of
		// this round, and the killed node's sockets count again once new.
		killNs.Store(math.MaxInt64)
		killedNode.Store(-1)
		rs := time.Now()
		if err := c.start(ctx, l); err != nil {
			return fail(fmt.Errorf("restart %s: %w", killed.name, err))
		}
		row.RestartSeconds = time.Since(rs).Seconds()
		srv.pids[l] = killed.p.PID()
		if err := connectNode(l); err != nil {
			return fail(err)
		}
		row.Load = harness.LoadAvg()
		if row.NewLeader != "" {
			e.saveLeaderLog(name, r+1, c, row.NewLeader, t)
		}
		e.logf("failover/%s %d/%d %s %s: became leader %s +%.0f ms, first delivery +%.0f ms, exit +%.0f ms, restart %.1fs",
			name, r+1, 2*cfg.Kills, sigName, killed.name, row.NewLeader, row.LeaderMS, row.DeliveryMS, row.ExitMS, row.RestartSeconds)
		rows = append(rows, row)
	}
	time.Sleep(cfg.Settle)
	close(stopWrite)
	<-writeDone
	stopAt := time.Now()
	time.Sleep(3 * time.Second) // deliveries drain
	closeAll()
	if writeErr != nil {
		return rows, FailoverAccounting{}, fmt.Errorf("writer: %w", writeErr)
	}
	// Worst latency around each kill, on the nodes that survived it.
	for ri := range rows {
		t := kills[ri].UnixNano()
		lo, hi := t-int64(time.Second), t+int64(3*time.Second)
		var worst int64
		for _, ff := range fleets {
			if c.nodes[ff.node].name == rows[ri].Killed {
				continue
			}
			for _, rs := range ff.recs {
				for _, x := range rs {
					if x.stamp >= lo && x.stamp < hi && x.at-x.stamp > worst {
						worst = x.at - x.stamp
					}
				}
			}
		}
		rows[ri].WorstMS = float64(worst) / 1e6
	}
	return rows, accountFailover(commits, kills, stopAt, fleets), nil
}

// accountFailover checks, for each window [kill_r - 1s, kill_r+1 - 1s) (the
// last ends when the writer stopped), that every commit that returned in it
// reached, exactly once, every socket connected before the window began and
// still connected half a second after it ended.
func accountFailover(commits []commitRec, kills []time.Time, stopAt time.Time, fleets []*failoverFleet) FailoverAccounting {
	var a FailoverAccounting
	if len(kills) == 0 {
		return a
	}
	type sock struct {
		from, until int64
		got         map[int64]int32
	}
	var socks []sock
	for _, ff := range fleets {
		for i, rs := range ff.recs {
			s := sock{from: ff.connectedAt, until: ff.f.ended[i].Load(), got: make(map[int64]int32, len(rs))}
			if s.until == 0 {
				s.until = math.MaxInt64
			}
			for _, x := range rs {
				s.got[x.stamp]++
			}
			socks = append(socks, s)
		}
	}
	bounds := make([]int64, 0, len(kills)+1)
	for _, k := range kills {
		bounds = append(bounds, k.Add(-time.Second).UnixNano())
	}
	bounds = append(bounds, stopAt.UnixNano())
	for w := 0; w+1 < len(bounds); w++ {
		lo, hi := bounds[w], bounds[w+1]
		var in []int64
		for _, c := range commits {
			if c.done >= lo && c.done < hi {
				in = append(in, c.stamp)
			}
		}
		a.Commits += int64(len(in))
		reached := make(map[int64]bool, len(in))
		for _, s := range socks {
			if s.from >= lo || s.until <= hi+int64(500*time.Millisecond) {
				continue
			}
			a.SocketRounds++
			for _, st := range in {
				a.Expected++
				switch n := s.got[st]; {
				case n == 0:
					a.Lost++
				default:
					a.Delivered++
					a.Duplicates += int64(n - 1)
					reached[st] = true
				}
			}
		}
		for _, st := range in {
			if !reached[st] {
				a.CommitsNone++
			}
		}
	}
	return a
}

// quantile is the nearest-rank q-quantile of v (sorted here); NaN if empty.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func failoverSummary(name string, rows []FailoverRow, a FailoverAccounting) []string {
	var out []string
	for _, sig := range []string{"SIGKILL", "SIGTERM"} {
		var leader, deliv, worst, exit []float64
		missing := 0
		for _, r := range rows {
			if r.Signal != sig {
				continue
			}
			if r.LeaderMS >= 0 {
				leader = append(leader, r.LeaderMS)
			} else {
				missing++
			}
			if r.DeliveryMS >= 0 {
				deliv = append(deliv, r.DeliveryMS)
			} else {
				missing++
			}
			worst = append(worst, r.WorstMS)
			exit = append(exit, r.ExitMS)
		}
		if len(exit) == 0 {
			continue
		}
		f := func(v []float64) string {
			return fmt.Sprintf("p50 %6.0f  p99 %6.0f  max %6.0f ms", quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1))
		}
		out = append(out,
			fmt.Sprintf("%s %s ×%d  became leader:         %s", name, sig, len(exit), f(leader)),
			fmt.Sprintf("%s %s ×%d  first post-kill event: %s", name, sig, len(exit), f(deliv)),
			fmt.Sprintf("%s %s ×%d  worst latency ±kill:   %s", name, sig, len(exit), f(worst)),
			fmt.Sprintf("%s %s ×%d  process exit:          %s", name, sig, len(exit), f(exit)))
		if missing > 0 {
			out = append(out, fmt.Sprintf("%s %s: %d takeovers not seen within 20 s", name, sig, missing))
		}
	}
	out = append(out, fmt.Sprintf("%s accounting: %d commits in the windows, %d (socket, window) pairs: expected %d, delivered %d, lost %d, duplicates %d, commits reaching no socket %d",
		name, a.Commits, a.SocketRounds, a.Expected, a.Delivered, a.Lost, a.Duplicates, a.CommitsNone))
	return out
}

// writeSteady commits single-row updates of calendar 0's events at rate
// per second (open loop, as writeRate) over workers connections until stop
// is closed, and returns every commit with its unique stamp.
func writeSteady(ctx context.Context, url string, t harness.Topology, rate, workers int, stop <-chan struct{}) ([]commitRec, error) {
	var next, last atomic.Int64
	uniq := func() int64 { // strictly increasing, so a stamp names one commit
		for {
			now, prev := time.Now().UnixNano(), last.Load()
			if now <= prev {
				now = prev + 1
			}
			if last.CompareAndSwap(prev, now) {
				return now
			}
		}
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	recs := make([][]commitRec, workers)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			for {
				k := next.Add(1) - 1
				at := start.Add(time.Duration(k) * interval)
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(time.Until(at)):
				}
				e := int(k) % max(t.EventsPerCalendar, 1)
				st := uniq()
				if _, err := conn.Exec(ctx, `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("%s%d", stampPrefix, st), harness.EventID(0, e)); err != nil {
					errs <- fmt.Errorf("commit %d: %w", k, err)
					return
				}
				recs[w] = append(recs[w], commitRec{st, time.Now().UnixNano()})
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []commitRec
	for _, r := range recs {
		all = append(all, r...)
	}
	return all, <-errs
}

// saveLeaderLog writes the new leader's log records from a second before
// the kill of round r to five seconds after it to the results directory
// (failover-<server>-<round>.log), to see where a takeover's time goes
// (LOG_LEVEL=debug in the cluster's spec says more).
func (e *Env) saveLeaderLog(server string, r int, c *cluster, node string, t time.Time) {
	var log string
	for _, n := range c.nodes {
		if n.name == node {
			log = n.p.Log()
		}
	}
	var keep []string
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec.Time.After(t.Add(-time.Second)) && rec.Time.Before(t.Add(5*time.Second)) {
			keep = append(keep, fmt.Sprintf("%+8.0fms %s", float64(rec.Time.Sub(t))/1e6, line))
		}
	}
	name := strings.NewReplacer("+", "_", "=", "-", "/", "_", "@", "_").Replace(server)
	_ = os.WriteFile(filepath.Join(e.ResultsDir, fmt.Sprintf("failover-%s-%02d.log", name, r)), []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}
