package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// devConfig is `serve`'s configuration plus what a first run needs.
type devConfig struct {
	serve    serveConfig
	dir      string
	simulate bool
	tokenTTL time.Duration
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
	f := newFlags(env, "dev", "Run everything a first look needs on one machine: a local PostgreSQL cluster under --dir "+
		"(unless DATABASE_URL is set), Koordi's tables, a demo family, a token per demo user, and serve with the inspector page at /. "+
		"Ctrl-C stops all of it; the next run reuses the cluster.")
	cfg.serve.bindWith(f, "127.0.0.1:3000")
	f.usage("database-url", "PostgreSQL URL of a development database to use (unset: a local cluster under --dir)")
	f.usage("jwt-secret", "HS256 secret for the demo tokens, at least 32 bytes (unset: generated once, kept in --dir)")
	f.String(&cfg.dir, "dir", "KOORDI_DEV_DIR", ".koordi", "directory of the local cluster and the generated JWT secret, kept between runs (make clean removes it)")
	f.Bool(&cfg.simulate, "simulate", "SIMULATE", false, "write a realistic stream of demo changes every second (assignments, a calendar sync, an invitation)")
	f.Duration(&cfg.tokenTTL, "token-ttl", "TOKEN_TTL", 7*24*time.Hour, "lifetime of the printed demo tokens")
	if err := f.parse(args); err != nil {
		return err
	}
	if cfg.tokenTTL <= 0 {
		return userErr("TOKEN_TTL must be positive")
	}
	logger, err := newLogger(env, cfg.serve.db.logFormat, cfg.serve.db.logLevel)
	if err != nil {
		return err
	}
	// Listen first: a busy port fails before anything is started, and the
	// printed address is the real one (port 0 picks a free one).
	ln, err := net.Listen("tcp", cfg.serve.listenAddr)
	if err != nil {
		return userErr("listen on %s: %v (set LISTEN_ADDR to another address)", cfg.serve.listenAddr, err)
	}
	defer ln.Close() // after serving, a no-op; before, it frees the port
	if cfg.serve.db.url == "" {
		if err := devReachable(cfg.dir); err != nil {
			return err
		}
	}
	// The demo tokens are HS256, so dev always has a secret (next to any
	// JWT_PUBLIC_KEY_FILE, whose tokens are accepted as well).
	if cfg.serve.jwtSecret == "" {
		if cfg.serve.jwtSecret, err = devSecret(cfg.dir); err != nil {
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
		cluster, err := devCluster(ctx, cfg.dir, logger)
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
	if err := devPrepare(ctx, cfg.serve.db); err != nil {
		return err
	}

	users, err := devTokens(cfg.serve.jwtSecret, cfg.tokenTTL)
	if err != nil {
		return err
	}
	calendars := make([]inspector.Calendar, len(ksql.DemoCalendars))
	for i, c := range ksql.DemoCalendars {
		calendars[i] = inspector.Calendar{ID: c.ID, Name: c.Name, Color: c.Color}
	}
	svc, err := cfg.serve.service(logger, func(reg *prometheus.Registry) http.Handler {
		return inspector.New(inspector.Config{
			Metrics: reg, DemoUsers: users, Calendars: calendars, Mode: "dev",
			Logger: logger.With("component", "inspector"),
		})
	})
	if err != nil {
		return err
	}
	devBanner(env.stdout, ln.Addr().(*net.TCPAddr), cfg, users)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runService(gctx, svc, ln) })
	if cfg.simulate {
		g.Go(func() error { return devSimulate(gctx, cfg.serve.db, logger.With("component", "simulate")) })
	}
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// usage replaces a bound flag's help text, for commands that share
// serve's settings but give one a different meaning.
func (f *flags) usage(name, usage string) {
	for i := range f.entries {
		if f.entries[i].name == name {
			f.entries[i].usage = usage
		}
	}
}

// devSecret returns the JWT secret kept in dir, creating it on first use, so
// tokens printed by one run still work after a restart.
func devSecret(dir string) (string, error) {
	path := filepath.Join(dir, "jwt_secret")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= auth.MinSecretLen {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate a JWT secret: %w", err)
	}
	secret := hex.EncodeToString(buf)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", userErr("create %s: %v", dir, err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", userErr("write %s: %v", path, err)
	}
	return secret, nil
}

// devReachable checks, when running as root, that the postgres user that
// pgcluster runs the server as can reach dir: a checkout under a private
// home directory (/root) is a common first-run failure whose initdb error
// ("Permission denied") does not say what to do.
func devReachable(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			return userErr("PostgreSQL runs as the postgres user, which cannot enter %s (not searchable by others): "+
				"use --dir in a directory it can reach (e.g. --dir /var/tmp/koordi) or chmod o+x %s", p, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// devCluster starts dev's own cluster in dir, created on first use and
// reused after. A PostgreSQL still running from dir (an earlier run was
// killed) is stopped first; a port taken since the cluster was created (it
// keeps its port between runs) moves the cluster to a free one.
func devCluster(ctx context.Context, dir string, log *slog.Logger) (*pgcluster.Cluster, error) {
	if pid, err := pgcluster.StopLeftover(ctx, dir); err != nil {
		return nil, devClusterErr(dir, err)
	} else if pid != 0 {
		log.Warn("PostgreSQL of an earlier run was still running (that run was killed); stopped it", "dir", dir, "pid", pid)
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Dir: dir})
	if errors.Is(err, pgcluster.ErrPortInUse) {
		var port int
		if port, err = pgcluster.FreePort(); err == nil {
			log.Warn("the local PostgreSQL's port is taken; moving it", "port", port)
			cluster, err = pgcluster.Start(ctx, pgcluster.Config{Dir: dir, Port: port})
		}
	}
	if err != nil {
		return nil, devClusterErr(dir, err)
	}
	return cluster, nil
}

func devClusterErr(dir string, err error) error {
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return userErr("%v: install PostgreSQL 15+ (Debian: apt-get install postgresql) or set DATABASE_URL", err)
	}
	return userErr("start the local PostgreSQL in %s (its log: %s): %v", dir, filepath.Join(dir, "postgres.log"), err)
}

// devPrepare creates Koordi's tables, the service's objects and the demo
// family; each step is idempotent.
func devPrepare(ctx context.Context, db dbConfig) error {
	return db.withConn(ctx, func(conn *pgx.Conn) error {
		if err := ksql.Migrate(ctx, conn); err != nil {
			return err
		}
		if err := ksql.Setup(ctx, conn, db.publication); err != nil {
			return userError{err}
		}
		return ksql.SeedDemo(ctx, conn)
	})
}

// devTokens mints a token per demo user.
func devTokens(secret string, ttl time.Duration) ([]inspector.DemoUser, error) {
	now := time.Now()
	users := make([]inspector.DemoUser, len(ksql.DemoUsers))
	for i, u := range ksql.DemoUsers {
		tok, err := auth.Mint([]byte(secret), u.ID, u.Email, now, ttl)
		if err != nil {
			return nil, userErr("JWT_SECRET: %v", err)
		}
		users[i] = inspector.DemoUser{ID: u.ID, Name: u.Name, Email: u.Email, Token: tok, Calendars: append([]string{}, u.Calendars...)}
	}
	return users, nil
}

// devBanner prints where everything is and a token per demo user. The
// database URL carries no password (the local cluster trusts local users);
// a DATABASE_URL given by the user is not printed.
func devBanner(w io.Writer, addr *net.TCPAddr, cfg devConfig, users []inspector.DemoUser) {
	host := addr.IP.String()
	if addr.IP.IsUnspecified() || addr.IP.IsLoopback() {
		host = "localhost"
	}
	base := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(addr.Port)))
	names := map[string]string{}
	for _, c := range ksql.DemoCalendars {
		names[c.ID] = c.Name
	}
	fmt.Fprintf(w, "\nkoordi-realtime dev\n\n")
	fmt.Fprintf(w, "  inspector   %s/\n", base)
	fmt.Fprintf(w, "  socket.io   %s  (io(%q, { auth: { token } }))\n", base+"/socket.io/", base)
	fmt.Fprintf(w, "  metrics     %s/metrics   health %s/healthz   ready %s/readyz\n", base, base, base)
	if strings.HasPrefix(cfg.serve.db.url, "postgres://postgres@127.0.0.1:") {
		fmt.Fprintf(w, "  database    psql %q\n", cfg.serve.db.url)
	}
	fmt.Fprintf(w, "\ndemo users (tokens valid %s; paste one into the inspector or your client):\n", cfg.tokenTTL)
	for _, u := range users {
		cals := make([]string, len(u.Calendars))
		for i, c := range u.Calendars {
			cals[i] = names[c]
		}
		member := "no calendars yet"
		if len(cals) > 0 {
			member = "member of " + strings.Join(cals, ", ")
		}
		fmt.Fprintf(w, "\n  %s <%s>, %s\n  %s\n", u.Name, u.Email, member, u.Token)
	}
	if cfg.simulate {
		fmt.Fprintf(w, "\nsimulating writes every second; Ctrl-C stops everything\n\n")
	} else {
		fmt.Fprintf(w, "\nCtrl-C stops everything. For a stream of demo writes: make demo-writes\n\n")
	}
}

// devSimulate writes the demo family's next change every second until ctx
// ends. A failed write is logged and retried with a new connection: the
// simulation must never bring the service down.
func devSimulate(ctx context.Context, db dbConfig, log *slog.Logger) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if conn == nil {
			c, err := db.connect(ctx)
			if err != nil {
				log.Warn("simulate: connect", "err", err)
				continue
			}
			conn = c
		}
		what, err := ksql.DemoStep(ctx, conn, n)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("simulate: write failed", "step", what, "err", err)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		log.Debug("simulate", "step", what)
		n++
	}
}
