package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/cmd/internal/devenv"
	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
)

// devPreparedEnv tells a node of `dev --nodes` that its parent prepared the
// database (tables, setup, demo family), so the nodes do not race at it.
const devPreparedEnv = "KOORDI_DEV_PREPARED"

// maxDevNodes bounds `dev --nodes`: each node is a process with its own
// PostgreSQL connections, and a demo needs only a few.
const maxDevNodes = 9

// runDevNodes is `dev --nodes N`: the local PostgreSQL and a local
// nats-server, then N nodes — each a `koordi-realtime dev` of its own, a
// child process on consecutive ports sharing the database, the slot and the
// feed — so that killing one (kill <pid>) shows a failover. A node that dies
// is started again after a few seconds; its sockets reconnect and recover.
func runDevNodes(ctx context.Context, env *environment, cfg devConfig) error {
	logger, err := env.logger(cfg.serve.db.logFormat, cfg.serve.db.logLevel)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(cfg.serve.listenAddr)
	if err != nil {
		return cli.Errorf("LISTEN_ADDR=%q: %v", cfg.serve.listenAddr, err)
	}
	base, err := strconv.Atoi(port)
	if err != nil || base <= 0 {
		return cli.Errorf("LISTEN_ADDR=%q: dev --nodes needs a fixed port, the first of %d", cfg.serve.listenAddr, cfg.nodes)
	}
	// Every node's port is checked before anything starts: a node that
	// cannot listen would only be restarted again and again.
	for i := range cfg.nodes {
		addr := net.JoinHostPort(host, strconv.Itoa(base+i))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return cli.Errorf("listen on %s for node%d: %v (set LISTEN_ADDR to another first port)", addr, i+1, err)
		}
		ln.Close()
	}
	if cfg.serve.jwtSecret == "" {
		if cfg.serve.jwtSecret, err = devenv.Secret(cfg.dir); err != nil {
			return err
		}
	}
	if cfg.serve.db.url == "" {
		if err := devenv.Reachable(cfg.dir); err != nil {
			return err
		}
		cluster, err := devenv.Cluster(ctx, cfg.dir, logger)
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				logger.Warn("stop local PostgreSQL", "err", err)
			}
		}()
		if cfg.serve.db.url, err = cluster.CreateDatabase(ctx, devDatabase); err != nil {
			return err
		}
	}
	if err := devPrepare(ctx, cfg.serve.db); err != nil {
		return err
	}
	natsURL := cfg.serve.natsURL
	if natsURL == "" {
		ns, err := natsserver.Start(ctx, natsserver.Config{Dir: filepath.Join(cfg.dir, "nats")})
		if err != nil {
			return cli.Errorf("start a local nats-server: %v", err)
		}
		defer ns.Stop()
		natsURL = ns.URL()
		logger.Info("local nats-server running", "url", natsURL)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	users, _, err := devUsers(ctx, cfg)
	if err != nil {
		return err
	}

	nodes := make([]*devNode, cfg.nodes)
	for i := range nodes {
		addr := net.JoinHostPort(host, strconv.Itoa(base+i))
		nodes[i] = &devNode{name: fmt.Sprintf("node%d", i+1), addr: addr, exe: exe, stderr: env.stderr, env: append(os.Environ(),
			"DATABASE_URL="+cfg.serve.db.url, "JWT_SECRET="+cfg.serve.jwtSecret, "NATS_URL="+natsURL,
			"LISTEN_ADDR="+addr, "NODE_NAME="+fmt.Sprintf("node%d", i+1), "SLOT_NAME="+cfg.serve.db.slot,
			"KOORDI_DEV_DIR="+cfg.dir, "TOKEN_TTL="+cfg.tokenTTL.String(), devPreparedEnv+"=1",
			"SIMULATE=false", "DEV_NODES=1")} // DEV_NODES in our environment must not make each node a dev --nodes of its own
		if procs := devenv.CoLocatedGOMAXPROCS(cfg.nodes, os.Environ()); procs != "" {
			nodes[i].env = append(nodes[i].env, procs)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range nodes {
		g.Go(func() error { return n.run(gctx, logger) })
	}
	// The writes come from here, not from a node, so they go on while
	// nodes are killed.
	if cfg.simulate {
		g.Go(func() error { return devenv.Simulate(gctx, cfg.serve.db.connect, logger.With("component", "simulate")) })
	}
	time.Sleep(500 * time.Millisecond) // the pids, for the banner
	fmt.Fprintf(env.stdout, "\nkoordi-realtime dev: %d nodes sharing one slot through %s\n\n", cfg.nodes, natsURL)
	for _, n := range nodes {
		fmt.Fprintf(env.stdout, "  %s  inspector http://%s/   pid %d\n", n.name, n.addr, n.pid())
	}
	fmt.Fprintf(env.stdout, "  database  psql %q\n", cfg.serve.db.url)
	fmt.Fprintf(env.stdout, "\nOne of them leads (its inspector says so). Kill it (kill <pid>) and watch another take over;\n"+
		"the killed node comes back after a few seconds and its tabs recover. Tokens, valid %s:\n", cfg.tokenTTL)
	for _, u := range users {
		fmt.Fprintf(env.stdout, "\n  %s <%s>\n  %s\n", u.Name, u.Email, u.Token)
	}
	fmt.Fprintln(env.stdout)
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// devNode is one child node, started again when it dies until ctx ends.
type devNode struct {
	name, addr, exe string
	env             []string
	stderr          io.Writer

	mu  sync.Mutex
	cmd *exec.Cmd
}

func (n *devNode) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// run starts the node and starts it again whenever it dies, until ctx
// ends. A node that refuses its configuration (exit status 2) is not
// restarted: every node has the same, so dev stops with its error.
func (n *devNode) run(ctx context.Context, log *slog.Logger) error {
	for ctx.Err() == nil {
		cmd := exec.Command(n.exe, "dev")
		cmd.Env = n.env
		out, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", n.name, err)
		}
		n.mu.Lock()
		restarted := n.cmd != nil
		n.cmd = cmd
		n.mu.Unlock()
		if restarted { // the first pid is in the banner
			log.Info("node started again", "node", n.name, "addr", n.addr, "pid", cmd.Process.Pid)
		}
		copied := make(chan struct{})
		go func() { defer close(copied); prefixLines(out, n.stderr, "["+n.name+"] ") }()
		done := make(chan error, 1)
		go func() { <-copied; done <- cmd.Wait() }() // Wait closes the pipe: read it all first
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return nil
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 2 {
				return cli.Errorf("%s refused its configuration (its last line above says why)", n.name)
			}
			log.Warn("node exited; starting it again in 3s", "node", n.name, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(3 * time.Second):
		}
	}
	return nil
}

func prefixLines(r io.Reader, w io.Writer, prefix string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fmt.Fprintln(w, prefix+sc.Text())
	}
}
