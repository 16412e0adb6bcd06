package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/cmd/internal/devenv"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// devConfig is `serve`'s configuration plus what a first run needs.
type devConfig struct {
	serve    serveConfig
	dir      string
	simulate bool
	tokenTTL time.Duration
	nodes    int
}

// devDatabase is the database dev creates in its own cluster.
const devDatabase = "koordi"

// runDev is `make run`: a local PostgreSQL (unless DATABASE_URL is set),
// Koordi's tables, the service's objects, a demo family, tokens to paste,
// and serve with the inspector at /. Everything it starts it stops again on
// SIGINT or SIGTERM, PostgreSQL included; the cluster's files stay for the
// next run, which reuses them and the replication slot.
func runDev(ctx context.Context, env *environment, args []string) error {
	var cfg devConfig
	f := env.flags("dev", "Run everything a first look needs on one machine: a local PostgreSQL cluster under --dir "+
		"(unless DATABASE_URL is set), Koordi's tables, a demo family, a token per demo user, and serve with the inspector page at /. "+
		"Ctrl-C stops all of it; the next run reuses the cluster.")
	// A first run on one machine: a connection bound its open-file limit holds.
	cfg.serve.bindWith(f, "127.0.0.1:3000", 1000)
	f.Usage("database-url", "PostgreSQL URL of a development database to use (unset: a local cluster under --dir)")
	f.Usage("jwt-secret", "HS256 secret for the demo tokens, at least 32 bytes (unset: generated once, kept in --dir)")
	f.String(&cfg.dir, "dir", "KOORDI_DEV_DIR", ".koordi", "directory of the local cluster and the generated JWT secret, kept between runs (make clean removes it)")
	f.Bool(&cfg.simulate, "simulate", "SIMULATE", false, "write a realistic stream of demo changes every second (assignments, a calendar sync, an invitation)")
	f.Duration(&cfg.tokenTTL, "token-ttl", "TOKEN_TTL", 7*24*time.Hour, "lifetime of the printed demo tokens")
	f.Int(&cfg.nodes, "nodes", "DEV_NODES", 1, "nodes to run, on consecutive ports, sharing a local nats-server (several nodes: kill one to watch a failover)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if cfg.tokenTTL <= 0 {
		return cli.Errorf("TOKEN_TTL must be positive")
	}
	if cfg.nodes < 1 || cfg.nodes > maxDevNodes {
		return cli.Errorf("DEV_NODES=%d: run 1 to %d nodes", cfg.nodes, maxDevNodes)
	}
	if cfg.nodes > 1 {
		return runDevNodes(ctx, env, cfg)
	}
	logger, err := env.logger(cfg.serve.db.logFormat, cfg.serve.db.logLevel)
	if err != nil {
		return err
	}
	// Listen first: a busy port fails before anything is started, and the
	// printed address is the real one (port 0 picks a free one).
	ln, err := net.Listen("tcp", cfg.serve.listenAddr)
	if err != nil {
		return cli.Errorf("listen on %s: %v (set LISTEN_ADDR to another address)", cfg.serve.listenAddr, err)
	}
	defer ln.Close() // after serving, a no-op; before, it frees the port
	if cfg.serve.db.url == "" {
		if err := devenv.Reachable(cfg.dir); err != nil {
			return err
		}
	}
	// The demo tokens are HS256, so dev always has a secret (next to any
	// JWT_PUBLIC_KEY_FILE, whose tokens are accepted as well).
	if cfg.serve.jwtSecret == "" {
		if cfg.serve.jwtSecret, err = devenv.Secret(cfg.dir); err != nil {
			return err
		}
	}
	// Every other setting is checked before PostgreSQL is started.
	early := cfg.serve
	if early.db.url == "" {
		early.db.url = "(local cluster)"
	}
	if err := early.validate(); err != nil {
		return err
	}

	if cfg.serve.db.url == "" {
		cluster, err := devenv.Cluster(ctx, cfg.dir, logger)
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(); err != nil {
				logger.Warn("stop local PostgreSQL", "err", err)
				return
			}
			logger.Info("local PostgreSQL stopped", "dir", cluster.Dir())
		}()
		logger.Info("local PostgreSQL running", "dir", cluster.Dir(), "port", cluster.Port())
		if cfg.serve.db.url, err = cluster.CreateDatabase(ctx, devDatabase); err != nil {
			return err
		}
	}
	if err := cfg.serve.validate(); err != nil {
		return err
	}
	// A node of `dev --nodes` finds the database prepared by its parent.
	if env.getenv(devPreparedEnv) == "" {
		if err := devPrepare(ctx, cfg.serve.db); err != nil {
			return err
		}
	}

	// The family as the database has it now (the seed leaves existing rows
	// alone): a restart after changes shows the truth.
	users, demoCals, err := devUsers(ctx, cfg)
	if err != nil {
		return err
	}
	calendars := devenv.Calendars(demoCals)
	link := &inspectorLink{}
	svc, err := cfg.serve.service(logger, func(reg *prometheus.Registry) http.Handler {
		return inspector.New(inspector.Config{
			Metrics: reg, DemoUsers: users, Calendars: calendars, Mode: "dev",
			Rooms: link.rooms, Emit: devEmit(cfg.serve.db),
			Logger: logger.With("component", "inspector"),
		})
	})
	if err != nil {
		return err
	}
	link.svc = svc
	// What serve checks before it listens: a DATABASE_URL of the user's
	// own may lack the REPLICATION attribute.
	if err := preflight(ctx, svc); err != nil {
		return err
	}
	devenv.Banner{
		Addr: ln.Addr().(*net.TCPAddr), DatabaseURL: cfg.serve.db.url,
		TokenTTL: cfg.tokenTTL, Simulate: cfg.simulate, Users: users, Calendars: calendars,
	}.Print(env.stdout)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runService(gctx, svc, ln) })
	if cfg.simulate {
		g.Go(func() error { return devenv.Simulate(gctx, cfg.serve.db.connect, logger.With("component", "simulate")) })
	}
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// devUsers reads the demo family as the database has it now and mints a
// token per user.
func devUsers(ctx context.Context, cfg devConfig) ([]inspector.DemoUser, []ksql.DemoCalendar, error) {
	var (
		demoUsers []ksql.DemoUser
		demoCals  []ksql.DemoCalendar
	)
	if err := cfg.serve.db.withConn(ctx, func(conn *pgx.Conn) (err error) {
		demoUsers, demoCals, err = ksql.ReadDemo(ctx, conn)
		return err
	}); err != nil {
		return nil, nil, err
	}
	users, err := devenv.Tokens(cfg.serve.jwtSecret, cfg.tokenTTL, demoUsers)
	return users, demoCals, err
}

// devPrepare creates Koordi's tables, the service's objects and the demo
// family; each step is idempotent.
func devPrepare(ctx context.Context, db dbConfig) error {
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		if err := ksql.Migrate(ctx, conn); err != nil {
			return err
		}
		if err := ksql.Setup(ctx, conn, db.publication); err != nil {
			return setupError(ctx, conn, err)
		}
		return ksql.SeedDemo(ctx, conn)
	})
}
