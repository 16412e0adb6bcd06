// Command koordi-bench is koordi-realtime's load generator and benchmark
// driver. It starts a throwaway PostgreSQL cluster (or uses
// --database-url), seeds Koordi's tables, starts the servers under test,
// connects Socket.IO clients over WebSocket, drives writes through SQL, and
// prints a table per scenario and writes it as JSON under --results.
//
//	koordi-bench [flags] cdc|cdc-deliver|fanout|latency|idle|bulk|failover|hop|cluster-idle|subjects|all|short
//	koordi-bench plot LATENCY-REPORT.json...   (a latency report's plot drawn again, next to it)
//
// Scenarios (see cmd/koordi-bench/RESULTS.md for figures):
//
//	cdc      backlog catch-up: koordi's consumer vs pg_recvlogical, same slot options
//	cdc-deliver  the same inside a running server while 10,000 sockets receive the derived events
//	fanout   deliveries/s, clients in rooms, vs the Node Socket.IO reference, raw and gateway; a server
//	         reading a slot gets its backlog held in WAL (its walsender stopped) and is timed from the
//	         release, as raw and gateway have theirs in memory (--live-backlog: streamed while written)
//	latency  write-to-receive latency swept over offered commit rates: p50/p99 per rate, the knee (per
//	         run, and of a server's runs pooled), a plot; a step that missed the goal only where a stall
//	         probe (`koordi-bench stall-probe`, a process that sleeps 1 ms at a time) saw the machine
//	         itself stall is run again (--stall-retries)
//	idle     server RSS per idle connection
//	bulk     one UPDATE of 200,000 events: the server's peak RSS (VmHWM), time to deliver, accounting
//	failover leader of a 3-node cluster killed (SIGKILL, SIGTERM in turn) under steady writes: takeover times, exactly-once accounting
//	hop      fanout and latency at 500 commits/s, one node against three (koordi,cluster3,cluster3,koordi): the NATS hop's cost
//	cluster-idle  100,000 idle sockets on six nodes, held by client processes under the open-file limit; per-node RSS and CPU vs koordi and Node
//	subjects the feed's one JetStream subject against one per room (10,000 rooms): publish rate and ack latency, ordered and filtered reads, start-up calls, server RSS, store and recovery (no PostgreSQL)
//	all      every scenario but cdc-deliver and bulk, full sizes; short: the same, small (make bench)
//
// Servers (--servers): raw (the physical-limit baseline, package raw,
// `koordi-bench serve-raw`), gateway (koordi's gateway fed from raw's
// in-memory schedule, no PostgreSQL: package gwonly, `koordi-bench
// serve-gateway`), gateway-pg (gateway while the same commits go through
// SQL and pg_recvlogical streams them from a slot of its own: PostgreSQL's
// share of the machine without koordi's decoding), koordi (koordi-realtime
// serve), node (the
// Node reference), inproc (`koordi-bench serve-inproc`, with pprof), url,
// clusterN (N serve nodes sharing one slot through a nats-server of their
// own; clients are spread over the nodes, CPU and RSS summed).
// A koordi server may be given as koordi@BINARY and any server with
// +KEY=VALUE environment suffixes (koordi+GOGC=50), each measured as a
// server of its own in the same command.
//
// main only wires flags to the scenario package.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/gwonly"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/inproc"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/raw"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/scenario"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "serve-inproc" {
		if err := serveInproc(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench serve-inproc:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		if err := serveHold(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench hold:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve-gateway" {
		if err := serveGateway(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench serve-gateway:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "write-sql" {
		if err := scenario.WriterMain(ctx, os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench write-sql:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "stall-probe" {
		if err := scenario.StallProbeMain(ctx, os.Args[2:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench stall-probe:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve-raw" {
		if err := serveRaw(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "koordi-bench serve-raw:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "koordi-bench:", err)
		os.Exit(1)
	}
}

func serveInproc(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-inproc", flag.ContinueOnError)
	var cfg inproc.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:3000", "Socket.IO address")
	fs.StringVar(&cfg.PprofListen, "pprof", "127.0.0.1:6060", "pprof address")
	fs.StringVar(&cfg.SlotName, "slot", "koordi_bench_inproc", "replication slot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.DatabaseURL, cfg.JWTSecret = os.Getenv("DATABASE_URL"), os.Getenv("JWT_SECRET")
	if v := os.Getenv("BULK_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("BULK_EVENTS: %w", err)
		}
		cfg.BulkEvents = n
	}
	return inproc.Run(ctx, cfg)
}

// serveHold is one client process of cluster-idle: it holds idle sockets
// until its stdin closes (or SIGTERM).
func serveHold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	var cfg scenario.HoldConfig
	var urls string
	fs.StringVar(&urls, "urls", "", "servers, comma-separated")
	fs.IntVar(&cfg.Connections, "connections", 0, "sockets")
	fs.IntVar(&cfg.Offset, "offset", 0, "index of the first socket")
	fs.IntVar(&cfg.Users, "users", 10_000, "users (seeded)")
	fs.IntVar(&cfg.Sources, "sources", 8, "source addresses")
	fs.IntVar(&cfg.SourceBase, "source-base", 1, "last byte of the first source address 127.0.0.x")
	fs.StringVar(&cfg.ReadyEvent, "ready-event", "", "event the server sends once the socket joined its rooms")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.URLs, cfg.Secret = strings.Split(urls, ","), os.Getenv("JWT_SECRET")
	if _, err := harness.RaiseNoFile(uint64(cfg.Connections) + 500); err != nil {
		fmt.Fprintln(os.Stderr, "warning:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop() }()
	return scenario.Hold(ctx, cfg, os.Stdout)
}

func serveRaw(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-raw", flag.ContinueOnError)
	var cfg raw.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:3000", "Socket.IO address (IPv4)")
	fs.StringVar(&cfg.Control, "control", "127.0.0.1:6061", "control and pprof address")
	fs.IntVar(&cfg.Threads, "threads", 0, "epoll worker threads (default GOMAXPROCS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return raw.Run(ctx, cfg)
}

func serveGateway(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-gateway", flag.ContinueOnError)
	var cfg gwonly.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:3000", "Socket.IO address")
	fs.StringVar(&cfg.Control, "control", "127.0.0.1:6062", "control and pprof address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.DatabaseURL, cfg.JWTSecret = os.Getenv("DATABASE_URL"), os.Getenv("JWT_SECRET")
	return gwonly.Run(ctx, cfg)
}

type options struct {
	servers, dbURL, koordiBin, nodeDir, results, pprofDir, target, rates string
	bulkShapes, clusterSrv                                               string
	liveBacklog                                                          bool
	kills, clientsPerNode, nodes, holders                                int
	settle, killAfter                                                    time.Duration
	bulkEvents                                                           int
	profileEvery                                                         time.Duration
	control                                                              bool
	serverEnv, pgSettings                                                []string
	targetPID, rawThreads, stallRetries                                  int
	clients, roomSize, backlog, rate, idleConns, sources                 int
	commits, txs, txRows, reps                                           int
	messages, rooms, wantedRooms, payload                                int
	duration, warmup, hold                                               time.Duration
	profile, writerProcess                                               bool
}

// defaultRates is the full latency sweep; short sweeps shortRates.
// latencyWarmup is the part of each of its steps not recorded in the p99.
// It was 4 s for part of 2026-12-03: the sweep's third step mostly began
// with up to 1.7 s of deliveries 100–200 ms late, which turned out to be
// the heartbeat of the 10,000 clients, connected in the same second and so
// pinged in the same instant every 25 s (RESULTS.md, 2026-12-03
// 09:26–11:57); the gateway now spreads first pings over the interval, and
// the warmup is 2 s again.
const (
	latencyWarmup = 2 * time.Second
	defaultRates  = "250,500,750,1000,1500,2000,2500,3000"
	shortRates    = "250,1000,2000"
)

// splitList is a comma-separated flag's values; none for "".
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.Atoi(f)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("--rates: %q is not a positive whole number of commits/s", f)
		}
		rates = append(rates, r)
	}
	if len(rates) == 0 {
		return nil, errors.New("--rates: no rate")
	}
	return rates, nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("koordi-bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.servers, "servers", "raw,koordi,node", "servers to measure, in order: raw (physical-limit baseline, serve-raw), koordi (koordi-realtime serve), node (testdata/bench reference), inproc (bench's own build with pprof), url (--target)")
	fs.StringVar(&o.dbURL, "database-url", "", "prepared or empty Koordi database (migrated and set up here); unset: start a throwaway cluster")
	fs.StringVar(&o.koordiBin, "koordi-bin", "", "koordi-realtime binary; unset: go build it")
	fs.StringVar(&o.nodeDir, "node-dir", "testdata/bench", "directory of the Node reference server (npm ci there first)")
	fs.StringVar(&o.results, "results", "cmd/koordi-bench/results", "directory for the JSON reports")
	fs.StringVar(&o.pprofDir, "pprof-dir", "", "directory for server profiles (default --results)")
	fs.StringVar(&o.target, "target", "", "base URL of any Socket.IO server, measured as server \"url\" (writes go to --database-url)")
	fs.IntVar(&o.targetPID, "target-pid", 0, "pid of the --target server, for RSS and CPU")
	fs.IntVar(&o.clients, "clients", 0, "fanout/latency: clients (default per scenario)")
	fs.IntVar(&o.roomSize, "room-size", 100, "fanout/latency: users per calendar room")
	fs.IntVar(&o.backlog, "backlog", 0, "fanout: transactions, each updating one event in every calendar")
	fs.BoolVar(&o.liveBacklog, "live-backlog", false, "fanout, hop: stream the backlog while the SQL writer writes it (the rate is then the writer's), instead of holding it in WAL and timing from its release")
	fs.IntVar(&o.rate, "rate", 0, "latency: one rate, commits per second (instead of --rates)")
	fs.StringVar(&o.rates, "rates", "", "latency: commit rates to sweep, comma-separated (default "+defaultRates+"; short: "+shortRates+")")
	fs.DurationVar(&o.duration, "duration", 0, "latency: how long each rate is written (default 10s; short: 4s)")
	fs.IntVar(&o.stallRetries, "stall-retries", 2, "latency, hop: run a step again, up to this many times, when it missed the p99 goal only where a stall probe saw the machine itself stall (0: never, and no probe)")
	fs.DurationVar(&o.warmup, "warmup", 0, "latency: first part of each rate not recorded, while the step up settles (default 2s, at most 2/5 of a shorter --duration; short: 1s)")
	fs.IntVar(&o.rawThreads, "raw-threads", 0, "server raw: epoll worker threads (default its GOMAXPROCS)")
	fs.IntVar(&o.idleConns, "connections", 0, "idle: connections")
	fs.DurationVar(&o.hold, "hold", 0, "idle: measurement window")
	fs.IntVar(&o.sources, "sources", 0, "client source addresses 127.0.0.1.. (default 8, more for over 80,000 connections)")
	fs.IntVar(&o.commits, "commits", 0, "cdc: single-row commits")
	fs.IntVar(&o.txs, "txs", 0, "cdc: multi-row transactions")
	fs.IntVar(&o.txRows, "tx-rows", 1000, "cdc: rows per multi-row transaction")
	fs.IntVar(&o.reps, "reps", 2, "cdc: runs per consumer; subjects: runs per layout (ABBA order)")
	fs.IntVar(&o.messages, "messages", 0, "subjects: messages published per run (default 200,000; short: 20,000)")
	fs.IntVar(&o.rooms, "rooms", 0, "subjects: rooms, the per-room layout's subjects (default 10,000; short: 1,000)")
	fs.IntVar(&o.wantedRooms, "wanted-rooms", 0, "subjects: rooms of the node that reads only its own (default 1,000; short: 100)")
	fs.IntVar(&o.payload, "payload", 400, "subjects: bytes of one message's payload, the JSON of a transaction of one event:updated (at least its 367 bytes without a title)")
	fs.StringVar(&o.bulkShapes, "bulk-shapes", "300x667,100x2000", "bulk: CALENDARSxEVENTS per calendar, comma-separated; one socket per calendar, one UPDATE of every event")
	fs.IntVar(&o.bulkEvents, "bulk-events", 0, "bulk: the servers' BULK_EVENTS (default serve's 1000; set, it is passed to them): a room over it expects one sync:reset")
	fs.BoolVar(&o.control, "control", true, "cdc-deliver: also run the server with only the probe socket (no delivery)")
	fs.StringVar(&o.clusterSrv, "cluster", "", "failover: the clusters, clusterN[@BINARY][+KEY=VALUE], comma-separated, each run in turn with its own --kills (default cluster3)")
	fs.IntVar(&o.kills, "kills", 0, "failover: leader kills per signal, SIGKILL and SIGTERM alternating (default 20; short: 2)")
	fs.IntVar(&o.clientsPerNode, "clients-per-node", 10, "failover: sockets per node, all in the written room")
	fs.DurationVar(&o.settle, "settle", 0, "failover: pause after the killed node is back, before the next kill (default 2s)")
	fs.DurationVar(&o.killAfter, "kill-after", 0, "failover: writes before the first kill (default --settle); REPLAY_WINDOW or more for steady-state takeovers")
	fs.IntVar(&o.nodes, "nodes", 0, "cluster-idle: nodes holding the connections (default 6; short: 3)")
	fs.IntVar(&o.holders, "holders", 0, "cluster-idle: client processes holding the connections (default: enough for 16,700 each)")
	fs.DurationVar(&o.profileEvery, "profile-every", 0, "bulk --profile: how often the heap is profiled (default 500ms)")
	fs.Func("server-env", "KEY=VALUE added to every server's environment (repeatable), e.g. GOMEMLIMIT=200MiB or GODEBUG=gctrace=1", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", v)
		}
		o.serverEnv = append(o.serverEnv, v)
		return nil
	})
	fs.Func("pg-setting", "KEY=VALUE set in the throwaway PostgreSQL cluster's configuration (repeatable), e.g. autovacuum=off; not with --database-url", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", v)
		}
		o.pgSettings = append(o.pgSettings, v)
		return nil
	})
	fs.BoolVar(&o.writerProcess, "writer-process", false, "latency: run the SQL writer in a process of its own (koordi-bench write-sql), not in the bench's, beside the clients")
	fs.BoolVar(&o.profile, "profile", false, "fanout/latency: CPU, heap and allocation profiles of servers inproc and raw (per rate in latency); idle: its heap and goroutines; cdc: CPU profile of the koordi consumer; bulk: heap profiles of inproc every second")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: koordi-bench [flags] cdc|cdc-deliver|fanout|latency|idle|bulk|failover|hop|cluster-idle|subjects|all|short")
		fmt.Fprintln(fs.Output(), "       koordi-bench plot LATENCY-REPORT.json...   (draw a latency report's plot again, next to it)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.Arg(0) == "plot" {
		return replot(fs.Args()[1:])
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one scenario expected")
	}
	which := fs.Arg(0)
	full := which == "all"
	short := which == "short"
	if !slices.Contains([]string{"all", "short", "cdc", "fanout", "latency", "idle", "bulk", "cdc-deliver", "failover", "hop", "cluster-idle", "subjects"}, which) {
		return fmt.Errorf("unknown scenario %q", which)
	}
	switch {
	case o.rate > 0 && o.rates != "":
		return errors.New("--rate and --rates: give one")
	case o.rate > 0:
		o.rates = strconv.Itoa(o.rate)
	case o.rates == "" && short:
		o.rates = shortRates
	case o.rates == "":
		o.rates = defaultRates
	}
	deliverServer, err := cdcDeliverServer(which, o.servers)
	if err != nil {
		return err
	}
	if err := backlogServers(which, o.servers); err != nil {
		return err
	}
	step, warmup, err := latencySteps(o.duration, o.warmup, short)
	if err != nil {
		return err
	}
	if err := checkPGSettings(which, o.dbURL, o.pgSettings); err != nil {
		return err
	}
	rates, err := parseRates(o.rates)
	if err != nil {
		return err
	}
	shapes, err := scenario.ParseBulkShapes(o.bulkShapes)
	if err != nil {
		return err
	}
	if o.bulkEvents != 0 {
		o.serverEnv = append(o.serverEnv, "BULK_EVENTS="+strconv.Itoa(o.bulkEvents))
	}
	// Connections are file descriptors on both ends.
	if _, err := harness.RaiseNoFile(200_000); err != nil {
		fmt.Fprintln(os.Stderr, "warning:", err)
	}

	env, cleanup, err := buildEnv(ctx, o, which != "subjects")
	if err != nil {
		return err
	}
	defer cleanup()
	servers := strings.Split(o.servers, ",")
	serversSet := false
	fs.Visit(func(f *flag.Flag) { serversSet = serversSet || f.Name == "servers" })
	size := func(v, fullV, shortV int) int { return pick(v, fullV, shortV, short) }
	dur := func(v, fullV, shortV time.Duration) time.Duration { return pick(v, fullV, shortV, short) }
	do := func(name string, f func() (*scenario.Report, error)) error {
		if which != name && !full && !short {
			return nil
		}
		rep, err := f()
		if rep != nil {
			rep.Command = "koordi-bench " + strings.Join(args, " ")
			rep.Print(os.Stdout)
			if path, werr := rep.WriteJSON(env.ResultsDir); werr == nil {
				fmt.Printf("wrote %s\n", path)
			}
			if path, werr := rep.WritePlot(env.ResultsDir); werr != nil {
				fmt.Fprintln(os.Stderr, "plot:", werr)
			} else if path != "" {
				fmt.Printf("wrote %s\n", path)
			}
		}
		return err
	}
	if err := do("cdc", func() (*scenario.Report, error) {
		return scenario.CDC(ctx, env, scenario.CDCConfig{
			Commits: size(o.commits, 100_000, 10_000), Txs: size(o.txs, 200, 20), TxRows: o.txRows, Reps: o.reps, Profile: o.profile,
		})
	}); err != nil {
		return err
	}
	if err := do("fanout", func() (*scenario.Report, error) {
		return scenario.Delivery(ctx, env, "fanout", scenario.DeliveryConfig{
			Servers: servers, Clients: size(o.clients, 10_000, 1_000), RoomSize: o.roomSize,
			Backlog: size(o.backlog, 300, 50), LiveBacklog: o.liveBacklog, Sources: o.sources, Profile: o.profile,
		})
	}); err != nil {
		return err
	}
	if err := do("latency", func() (*scenario.Report, error) {
		return scenario.Sweep(ctx, env, scenario.SweepConfig{
			Servers: servers, Clients: size(o.clients, 10_000, 1_000), RoomSize: o.roomSize, Rates: rates,
			Step: step, Warmup: warmup,
			Sources: o.sources, Profile: o.profile, StallRetries: o.stallRetries,
		})
	}); err != nil {
		return err
	}
	if err := do("idle", func() (*scenario.Report, error) {
		return scenario.Idle(ctx, env, scenario.IdleConfig{
			Servers: servers, Connections: size(o.idleConns, 18_000, 2_000), Sources: o.sources,
			Hold: dur(o.hold, 30*time.Second, 3*time.Second), Profile: o.profile,
		})
	}); err != nil {
		return err
	}
	if err := do("failover", func() (*scenario.Report, error) {
		return scenario.Failover(ctx, env, scenario.FailoverConfig{
			Servers: splitList(o.clusterSrv), Kills: size(o.kills, 20, 2), Rate: size(o.rate, 100, 100), ClientsPerNode: o.clientsPerNode,
			Settle: o.settle, KillAfter: o.killAfter, Sources: o.sources,
		})
	}); err != nil {
		return err
	}
	// hop: fanout and latency at one rate, one node against three, ABBA.
	hopServers := servers
	if !serversSet {
		hopServers = strings.Split(scenario.HopServers, ",")
	}
	if err := do("hop", func() (*scenario.Report, error) {
		rep, err := scenario.Delivery(ctx, env, "hop-fanout", scenario.DeliveryConfig{
			Servers: hopServers, Clients: size(o.clients, 10_000, 1_000), RoomSize: o.roomSize,
			Backlog: size(o.backlog, 300, 50), LiveBacklog: o.liveBacklog, Sources: o.sources, Profile: o.profile,
		})
		if rep != nil {
			scenario.HopRatios(rep, 0.7, 2)
		}
		return rep, err
	}); err != nil {
		return err
	}
	if err := do("hop", func() (*scenario.Report, error) {
		rep, err := scenario.Sweep(ctx, env, scenario.SweepConfig{
			Scenario: "hop-latency", Servers: hopServers, Clients: size(o.clients, 10_000, 1_000), RoomSize: o.roomSize, Rates: []int{size(o.rate, 500, 500)},
			Step: dur(o.duration, 10*time.Second, 4*time.Second), Warmup: dur(o.warmup, 2*time.Second, time.Second),
			Sources: o.sources, Profile: o.profile, StallRetries: o.stallRetries,
		})
		if rep != nil {
			scenario.HopRatios(rep, 0.7, 2)
		}
		return rep, err
	}); err != nil {
		return err
	}
	if err := do("cluster-idle", func() (*scenario.Report, error) {
		nodes := size(o.nodes, 6, 3)
		srvs := servers
		if !serversSet {
			srvs = []string{fmt.Sprintf("cluster%d", nodes), "koordi", "node"}
		}
		return scenario.ClusterIdle(ctx, env, scenario.ClusterIdleConfig{
			Servers: srvs, Connections: size(o.idleConns, 100_000, 3_000), Holders: o.holders,
			Sources: o.sources, Hold: dur(o.hold, 30*time.Second, 3*time.Second),
		})
	}); err != nil {
		return err
	}
	if err := do("subjects", func() (*scenario.Report, error) {
		return scenario.Subjects(ctx, env, scenario.SubjectsConfig{
			Messages: size(o.messages, 200_000, 20_000), Rooms: size(o.rooms, 10_000, 1_000),
			Wanted: size(o.wantedRooms, 1_000, 100), Payload: o.payload, Reps: o.reps,
		})
	}); err != nil {
		return err
	}
	switch which { // neither is part of all or short
	case "cdc-deliver":
		clients := []int{size(o.clients, 10_000, 1_000)}
		if o.control {
			clients = append(clients, 0)
		}
		return do("cdc-deliver", func() (*scenario.Report, error) {
			return scenario.CDCLive(ctx, env, scenario.CDCLiveConfig{
				Server: deliverServer, Clients: clients, RoomSize: o.roomSize, Commits: size(o.commits, 100_000, 10_000),
				Reps: o.reps, Sources: o.sources, Profile: o.profile,
			})
		})
	case "bulk":
	default:
		return nil
	}
	return do("bulk", func() (*scenario.Report, error) {
		return scenario.Bulk(ctx, env, scenario.BulkConfig{
			Servers: servers, Shapes: shapes, Bulk: o.bulkEvents, Sources: o.sources, Profile: o.profile, ProfileEvery: o.profileEvery,
		})
	})
}

// buildEnv starts what the flags do not provide: a cluster, the
// koordi-realtime binary, a JWT secret; without servers (subjects alone)
// neither the cluster nor the binary.
func buildEnv(ctx context.Context, o options, servers bool) (*scenario.Env, func(), error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	env := &scenario.Env{
		DatabaseURL: o.dbURL, JWTSecret: hex.EncodeToString(secret), KoordiBin: o.koordiBin, BenchBin: self,
		RawThreads: o.rawThreads, NodeDir: o.nodeDir, Target: o.target, TargetPID: o.targetPID, PprofDir: o.pprofDir, ResultsDir: o.results,
		ServerEnv: o.serverEnv, Out: os.Stdout, Log: os.Stderr, WriterProcess: o.writerProcess,
	}
	if s := os.Getenv("JWT_SECRET"); s != "" && o.target != "" {
		env.JWTSecret = s // an external server verifies with its own secret
	}
	if err := os.MkdirAll(o.results, 0o755); err != nil {
		return nil, nil, err
	}
	if !servers {
		return env, cleanup, nil
	}
	if env.KoordiBin == "" && strings.Contains(o.servers, "koordi") {
		dir, err := os.MkdirTemp("", "koordi-bench-")
		if err != nil {
			return nil, nil, err
		}
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
		env.KoordiBin = filepath.Join(dir, "koordi-realtime")
		fmt.Fprintln(os.Stderr, "building koordi-realtime …")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", env.KoordiBin, "./cmd/koordi-realtime").CombinedOutput(); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("go build ./cmd/koordi-realtime (run from the module root or pass --koordi-bin): %w: %s", err, out)
		}
	}
	if env.DatabaseURL == "" {
		fmt.Fprintln(os.Stderr, "starting a throwaway PostgreSQL cluster …")
		settings := map[string]string{}
		for _, kv := range o.pgSettings {
			k, v, _ := strings.Cut(kv, "=")
			settings[k] = v
		}
		c, url, err := harness.StartCluster(ctx, settings)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		cleanups = append(cleanups, func() { _ = c.Stop() })
		env.DatabaseURL = url
		if pid, err := c.PostmasterPID(); err == nil {
			env.PostgresPID = pid
		}
	} else if err := harness.Prepare(ctx, env.DatabaseURL); err != nil {
		cleanup()
		return nil, nil, err
	}
	return env, cleanup, nil
}

// checkPGSettings refuses --pg-setting where no throwaway cluster starts
// for it to configure.
func checkPGSettings(which, dbURL string, settings []string) error {
	switch {
	case len(settings) == 0:
		return nil
	case dbURL != "":
		return errors.New("--pg-setting configures the throwaway cluster: set it on the server of --database-url instead")
	case which == "subjects":
		return errors.New("--pg-setting: subjects starts no PostgreSQL")
	}
	return nil
}

// backlogServers refuses, before anything starts, a server that cannot
// take fanout's backlog: gateway-pg stands beside a SQL load at a rate.
func backlogServers(which, servers string) error {
	if which != "fanout" && which != "all" && which != "short" {
		return nil
	}
	for _, s := range splitList(servers) {
		kind, err := scenario.ServerKind(s)
		if err != nil {
			return err
		}
		if kind == "gateway-pg" {
			return fmt.Errorf("%s runs fanout, which %q cannot: gateway-pg stands beside a SQL load at a rate (latency, hop)", which, s)
		}
	}
	return nil
}

// cdcDeliverServer is the one server cdc-deliver measures (the first koordi
// or inproc of --servers, koordi if none); a second is refused before
// anything starts, since the scenario would not run it.
func cdcDeliverServer(which, servers string) (string, error) {
	if which != "cdc-deliver" {
		return "", nil
	}
	srv := ""
	for _, s := range splitList(servers) {
		kind, err := scenario.ServerKind(s)
		if err != nil {
			return "", err
		}
		if kind == "koordi" || kind == "inproc" {
			if srv != "" {
				return "", fmt.Errorf("cdc-deliver measures one server against pg_recvlogical and raw: %q and %q given; run it once for each", srv, s)
			}
			srv = s
		}
	}
	if srv == "" {
		srv = "koordi"
	}
	return srv, nil
}

// latencySteps is the latency sweep's step and warmup: --duration and
// --warmup, else 10 s and latencyWarmup (short: 4 s and 1 s), the default
// warmup at most two fifths of a shorter step. A warmup given that leaves
// nothing of the step is refused.
func latencySteps(duration, warmup time.Duration, short bool) (time.Duration, time.Duration, error) {
	step := pick(duration, 10*time.Second, 4*time.Second, short)
	switch {
	case warmup > 0 && warmup >= step:
		return 0, 0, fmt.Errorf("--warmup %s leaves nothing of a step of %s (--duration) to record", warmup, step)
	case warmup > 0:
		return step, warmup, nil
	case short:
		return step, time.Second, nil
	default:
		return step, min(latencyWarmup, step*2/5), nil
	}
}

// replot draws the plots of latency reports again, with the knees worked
// out from their rows as this build does.
func replot(reports []string) error {
	if len(reports) == 0 {
		return errors.New("plot: name one or more latency reports (JSON written by koordi-bench latency)")
	}
	for _, r := range reports {
		path, err := scenario.Replot(r)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		fmt.Printf("wrote %s\n", path)
	}
	return nil
}

// pick is a scenario size: the flag's value if set, else the short or the
// full default.
func pick[T int | time.Duration](v, full, shortV T, short bool) T {
	switch {
	case v > 0:
		return v
	case short:
		return shortV
	default:
		return full
	}
}
