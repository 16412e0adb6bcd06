package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/gateway/auth"
)

// Env is what every scenario needs from the command line.
type Env struct {
	DatabaseURL string // a prepared Koordi database (harness.Prepare)
	JWTSecret   string
	KoordiBin   string // koordi-realtime binary for server "koordi"
	BenchBin    string // this binary, for servers "inproc", "raw" and "gateway", and the SQL writer
	// WriterProcess runs the latency sweep's SQL writer in a process of its
	// own (WriterMain) instead of the bench's, beside the clients.
	WriterProcess bool
	RawThreads    int    // epoll workers of server "raw"; 0: its default
	NodeDir       string // testdata/bench, for server "node"
	// Target and TargetPID describe an external server ("url").
	Target    string
	TargetPID int
	// PprofDir, if set, receives CPU and heap profiles of server "inproc".
	PprofDir   string
	ResultsDir string
	// PostgresPID is the postmaster of the database, when it runs here
	// (the throwaway cluster): its CPU is reported beside the server's.
	PostgresPID int
	// ServerEnv is added to the environment of every server started
	// (--server-env), e.g. GOMEMLIMIT=200MiB or GODEBUG=gctrace=1.
	ServerEnv []string
	Out       io.Writer
	Log       io.Writer
}

func (e *Env) logf(format string, args ...any) {
	fmt.Fprintf(e.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// server is one server under test, running.
type server struct {
	name string // the spec it was started from (see startServer)
	url  string
	pid  int // 0 if unknown (external without --target-pid)
	// urls and pids are every node of a cluster (kind clusterN): clients
	// are spread over urls, CPU and RSS summed over pids; url and pid are
	// the first node's.
	urls []string
	pids []int
	// cluster is the running cluster of kind clusterN, else nil.
	cluster    *cluster
	readyEvent string // see sioclient.Options.ReadyEvent
	pprof      string // pprof base URL for inproc and raw
	// control is raw's control URL: writes are raw's in-memory schedule,
	// not SQL.
	control string
	// sqlLoad (gateway-pg) also writes each schedule's commits through SQL,
	// for a reader of a slot of its own, while the server delivers from
	// the schedule.
	sqlLoad bool
	// slot is the replication slot of koordi and inproc.
	slot string
	// output is the server's combined output so far (nil for url).
	output func() string
	stop   func()
	pgPID  int // the database's postmaster, for procSample.pgCPU
}

// serverSpec is a server name as --servers gives it: kind[@binary][+KEY=VALUE…].
// "koordi+GOGC=50" is serve with GOGC=50 in its environment,
// "koordi@bin/old" serve built elsewhere; both run as their own server in
// the same command, so variants are compared against the same baseline.
type serverSpec struct {
	kind string
	bin  string   // koordi only: binary instead of Env.KoordiBin
	env  []string // added to the server's environment (koordi, inproc, raw, node)
}

func parseServerSpec(s string) (serverSpec, error) {
	parts := strings.Split(s, "+")
	sp := serverSpec{kind: parts[0]}
	if k, bin, ok := strings.Cut(sp.kind, "@"); ok {
		if (k != "koordi" && !strings.HasPrefix(k, "cluster")) || bin == "" {
			return sp, fmt.Errorf("server %q: @binary applies to koordi and clusterN only", s)
		}
		sp.kind, sp.bin = k, bin
	}
	for _, kv := range parts[1:] {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return sp, fmt.Errorf("server %q: %q is not KEY=VALUE", s, kv)
		}
		sp.env = append(sp.env, kv)
	}
	return sp, nil
}

// ServerKind is the kind of a --servers name (koordi of koordi@bin/old+GOGC=50).
func ServerKind(name string) (string, error) {
	sp, err := parseServerSpec(name)
	return sp.kind, err
}

// startServer starts the named server: raw, gateway, gateway-pg, koordi, node, inproc or url,
// optionally with a binary and environment (see serverSpec); Env.ServerEnv
// goes to every server this process starts.
func (e *Env) startServer(ctx context.Context, name string) (*server, error) {
	spec, err := parseServerSpec(name)
	if err != nil {
		return nil, err
	}
	srv, err := e.startSpec(ctx, spec)
	if srv != nil {
		srv.name, srv.pgPID = name, e.PostgresPID
	}
	return srv, err
}

func (e *Env) startSpec(ctx context.Context, spec serverSpec) (*server, error) {
	name := spec.kind
	if name == "url" {
		if e.Target == "" {
			return nil, fmt.Errorf("server url needs --target")
		}
		return &server{name: "url", url: strings.TrimRight(e.Target, "/"), pid: e.TargetPID, stop: func() {}}, nil
	}
	if n, ok := clusterSize(name); ok {
		bin := e.KoordiBin
		if spec.bin != "" {
			bin = spec.bin
		}
		c, err := e.startCluster(ctx, n, bin, spec.env)
		if err != nil {
			return nil, err
		}
		srv := &server{name: name, url: c.nodes[0].url, pid: c.nodes[0].p.PID(), slot: c.slot, cluster: c, stop: c.stop}
		for _, nd := range c.nodes {
			srv.urls = append(srv.urls, nd.url)
			srv.pids = append(srv.pids, nd.p.PID())
		}
		srv.output = c.nodes[0].p.Log
		return srv, nil
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	url := "http://" + addr
	extra := append(append([]string(nil), e.ServerEnv...), spec.env...)
	base := append([]string{"DATABASE_URL=" + e.DatabaseURL, "JWT_SECRET=" + e.JWTSecret}, extra...)
	switch name {
	case "koordi":
		slot := "koordi_bench_serve"
		if err := dropSlot(ctx, e.DatabaseURL, slot); err != nil {
			return nil, err
		}
		bin := e.KoordiBin
		if spec.bin != "" {
			bin = spec.bin
		}
		p, err := harness.StartProcess(ctx, name, url, append([]string{"LISTEN_ADDR=" + addr, "SLOT_NAME=" + slot,
			"PUBLICATION_NAME=" + harness.Publication, "FRONTEND_URL="}, base...), "", bin, "serve")
		if err != nil {
			return nil, err
		}
		return &server{name: name, url: url, pid: p.PID(), output: p.Log, slot: slot,
			stop: func() { p.Stop(); _ = dropSlot(context.Background(), e.DatabaseURL, slot) }}, nil
	case "inproc":
		slot := "koordi_bench_inproc"
		if err := dropSlot(ctx, e.DatabaseURL, slot); err != nil {
			return nil, err
		}
		pport, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		paddr := "127.0.0.1:" + strconv.Itoa(pport)
		p, err := harness.StartProcess(ctx, name, url, base, "", e.BenchBin, "serve-inproc", "--listen", addr, "--pprof", paddr, "--slot", slot)
		if err != nil {
			return nil, err
		}
		return &server{name: name, url: url, pid: p.PID(), pprof: "http://" + paddr, output: p.Log, slot: slot,
			stop: func() { p.Stop(); _ = dropSlot(context.Background(), e.DatabaseURL, slot) }}, nil
	case "raw":
		return e.startPlanned(ctx, name, url, extra, "serve-raw", "--listen", addr, "--threads", strconv.Itoa(e.RawThreads))
	case "gateway":
		return e.startPlanned(ctx, name, url, base, "serve-gateway", "--listen", addr)
	case "gateway-pg":
		return e.startGatewayPG(ctx, name, url, base, addr)
	case "node":
		if _, err := os.Stat(filepath.Join(e.NodeDir, "node_modules", "socket.io")); err != nil {
			return nil, fmt.Errorf("node reference: run `cd %s && npm ci` first: %w", e.NodeDir, err)
		}
		if err := harness.InstallNotifyTriggers(ctx, e.DatabaseURL); err != nil {
			return nil, err
		}
		p, err := harness.StartProcess(ctx, name, url, append(base, "PORT="+strconv.Itoa(port), "NOTIFY_CHANNEL="+harness.NotifyChannel),
			e.NodeDir, "node", "server.js")
		if err != nil {
			_ = harness.DropNotifyTriggers(context.Background(), e.DatabaseURL)
			return nil, err
		}
		return &server{name: name, url: url, pid: p.PID(), readyEvent: "bench:ready", output: p.Log,
			stop: func() { p.Stop(); _ = harness.DropNotifyTriggers(context.Background(), e.DatabaseURL) }}, nil
	}
	return nil, fmt.Errorf("unknown server %q (raw, gateway, gateway-pg, koordi, clusterN, node, inproc, url)", name)
}

// gatewayPGSlot is the slot pg_recvlogical reads beside server gateway-pg.
const gatewayPGSlot = "koordi_bench_gateway_pg"

// startGatewayPG starts server gateway-pg: the gateway fed from its
// in-memory schedule, as gateway, while every commit of the schedule is
// also written through SQL and streamed by pg_recvlogical from a slot of
// its own to /dev/null. PostgreSQL's commits and walsender, and the SQL
// writer, then take their share of the machine as they do beside koordi,
// but nothing decodes the stream for the sockets: koordi against
// gateway-pg is what koordi's own reading, decoding and derivation cost.
func (e *Env) startGatewayPG(ctx context.Context, name, url string, env []string, addr string) (*server, error) {
	reader, err := startSlotReader(ctx, e.DatabaseURL, gatewayPGSlot)
	if err != nil {
		return nil, err
	}
	srv, err := e.startPlanned(ctx, name, url, env, "serve-gateway", "--listen", addr)
	if err != nil {
		_ = reader.stop()
		return nil, err
	}
	srv.sqlLoad = true
	stopGateway := srv.stop
	srv.stop = func() {
		stopGateway()
		if err := reader.stop(); err != nil {
			e.logf("%s: %v", name, err)
		}
	}
	return srv, nil
}

// slotReader is pg_recvlogical streaming a slot of its own to /dev/null.
type slotReader struct {
	url, slot string
	p         *harness.Process
}

// startSlotReader creates slot (dropping one of that name first) and
// streams it with pg_recvlogical; it returns once PostgreSQL shows the slot
// active, so a baseline that stands on the reader is only measured while
// the reader reads.
func startSlotReader(ctx context.Context, url, slot string) (*slotReader, error) {
	recv, err := findRecvLogical()
	if err != nil {
		return nil, err
	}
	if err := createSlots(ctx, url, map[string][]string{consumerRecv: {slot}}); err != nil {
		return nil, err
	}
	p, err := harness.Spawn("pg_recvlogical", nil, "", append([]string{recv}, recvLogicalArgs(url, slot)...)...)
	if err != nil {
		_ = dropSlot(context.Background(), url, slot)
		return nil, err
	}
	r := &slotReader{url: url, slot: slot, p: p}
	if err := r.waitActive(ctx); err != nil {
		_ = r.stop()
		return nil, fmt.Errorf("pg_recvlogical on %s: %w: %s", slot, err, strings.TrimSpace(p.Log()))
	}
	return r, nil
}

// waitActive waits, up to 10 s, until a walsender streams the slot; it
// fails at once if the reader exits first.
func (r *slotReader) waitActive(ctx context.Context) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		var active bool
		err := withConn(ctx, r.url, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, r.slot).Scan(&active)
		})
		switch {
		case err != nil:
			return err
		case active:
			return nil
		case time.Now().After(deadline):
			return errors.New("not streaming after 10s")
		}
		select {
		case <-r.p.Done():
			return errors.New("exited before streaming")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the reader (harness.Process.Stop: SIGTERM, on which
// pg_recvlogical exits cleanly) and drops its slot.
func (r *slotReader) stop() error {
	r.p.Stop()
	return dropSlot(context.Background(), r.url, r.slot)
}

// recvLogicalArgs are pg_recvlogical's arguments to stream slot with the
// options a single koordi node's consumer uses (to /dev/null, until
// stopped): no logical messages, which only cluster nodes ask for.
func recvLogicalArgs(url, slot string) []string {
	return []string{"-d", url, "--slot", slot, "--start",
		"-o", "proto_version=1", "-o", "publication_names=" + harness.Publication, "-f", "/dev/null"}
}

// startPlanned starts one of this binary's servers run from a raw.Plan
// (raw, gateway): args plus a control address of its own, which takes the
// plans and serves pprof.
func (e *Env) startPlanned(ctx context.Context, name, url string, env []string, args ...string) (*server, error) {
	cport, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	ctl := "127.0.0.1:" + strconv.Itoa(cport)
	p, err := harness.StartProcess(ctx, name, url, env, "", append(append([]string{e.BenchBin}, args...), "--control", ctl)...)
	if err != nil {
		return nil, err
	}
	return &server{name: name, url: url, pid: p.PID(), pprof: "http://" + ctl, control: "http://" + ctl, output: p.Log, stop: p.Stop}, nil
}

// slotRelease is how long dropSlot waits for a slot's walsender to let
// go: that of a reader stopped a moment ago takes a moment to exit.
const slotRelease = 5 * time.Second

// dropSlot drops slot if it exists, once no walsender streams it: it waits
// up to slotRelease, then fails, so that a server is never started on a
// slot another still reads, nor a stopped one's slot left to hold WAL.
func dropSlot(ctx context.Context, url, slot string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(slotRelease); ; {
		var exists, active bool
		err := conn.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&exists, &active)
		switch {
		case err != nil:
			return err
		case !exists:
			return nil
		case !active:
			_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == "55006" || pgErr.Code == "42704") {
				continue // taken or dropped since the query: look again
			}
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("slot %s still streamed %s after its reader was stopped; drop it by hand", slot, slotRelease)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tokens mints one token per user, valid for the run.
func (e *Env) tokens(users int) (func(i int) string, error) {
	toks := make([]string, users)
	now := time.Now()
	for u := range toks {
		t, err := auth.Mint([]byte(e.JWTSecret), harness.UserID(u), fmt.Sprintf("u%d@bench.test", u), now, 6*time.Hour)
		if err != nil {
			return nil, err
		}
		toks[u] = t
	}
	return func(i int) string { return toks[i%users] }, nil
}

// procSample is CPU time and RSS of the server and of this process.
type procSample struct {
	at        time.Time
	serverCPU time.Duration
	benchCPU  time.Duration
	pgCPU     time.Duration // PostgreSQL's, if Env.PostgresPID is known
	serverRSS int64
	// System calls: the server's writes (a server in this process, inproc,
	// counts none) and this process's reads, its clients'.
	serverWrites int64
	benchReads   int64
}

func sample(pid int) procSample {
	s := procSample{at: time.Now()}
	if pid > 0 {
		s.serverCPU, _ = harness.CPUTime(pid)
		s.serverRSS, _ = harness.RSS(pid)
		_, s.serverWrites, _ = harness.Syscalls(pid)
	}
	s.benchCPU, _ = harness.CPUTime(os.Getpid())
	s.benchReads, _, _ = harness.Syscalls(os.Getpid())
	return s
}

// sample is the server's CPU time and RSS, summed over a cluster's nodes.
func (s *server) sample() procSample {
	ps := s.sampleServer()
	if s.pgPID > 0 {
		ps.pgCPU, _ = harness.TreeCPUTime(s.pgPID)
	}
	return ps
}

func (s *server) sampleServer() procSample {
	if len(s.pids) == 0 {
		return sample(s.pid)
	}
	ps := sample(0)
	for _, pid := range s.pids {
		c, _ := harness.CPUTime(pid)
		r, _ := harness.RSS(pid)
		_, w, _ := harness.Syscalls(pid)
		ps.serverCPU += c
		ps.serverRSS += r
		ps.serverWrites += w
	}
	return ps
}

// targets is every URL clients of the server spread over.
func (s *server) targets() []string {
	if len(s.urls) > 0 {
		return s.urls
	}
	return []string{s.url}
}

// pgCores is PostgreSQL's CPU between a and b, in cores.
func pgCores(a, b procSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return (b.pgCPU - a.pgCPU).Seconds() / wall
}

// cores is the CPU used between a and b, in cores.
func cores(a, b procSample) (server, bench float64) {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0, 0
	}
	return (b.serverCPU - a.serverCPU).Seconds() / wall, (b.benchCPU - a.benchCPU).Seconds() / wall
}
