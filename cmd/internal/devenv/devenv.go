// Package devenv is what `koordi-realtime dev` sets up around the service
// for a first run on one machine: its own PostgreSQL cluster under a
// directory (created once, reused, moved to a free port when its own is
// taken, a leftover of a killed run stopped first), a JWT secret kept next to
// it so printed tokens survive restarts, a token per demo user, the banner,
// and the simulation of a family's writes.
package devenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// Secret returns the JWT secret kept in dir, creating it on first use, so
// tokens printed by one run still work after a restart.
func Secret(dir string) (string, error) {
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
		return "", cli.Errorf("create %s: %v", dir, err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", cli.Errorf("write %s: %v", path, err)
	}
	return secret, nil
}

// Reachable checks, when running as root, that the postgres user that
// pgcluster runs the server as can reach dir: a checkout under a private
// home directory (/root) is a common first-run failure whose initdb error
// ("Permission denied") does not say what to do.
func Reachable(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			return cli.Errorf("PostgreSQL runs as the postgres user, which cannot enter %s (not searchable by others): "+
				"use --dir in a directory it can reach (e.g. --dir /var/tmp/koordi) or chmod o+x %s", p, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// Cluster starts dev's own cluster in dir, created on first use and
// reused after. A PostgreSQL still running from dir (an earlier run was
// killed) is stopped first; a port taken since the cluster was created (it
// keeps its port between runs) moves the cluster to a free one.
func Cluster(ctx context.Context, dir string, log *slog.Logger) (*pgcluster.Cluster, error) {
	if pid, err := pgcluster.StopLeftover(ctx, dir); err != nil {
		return nil, clusterErr(dir, err)
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
		return nil, clusterErr(dir, err)
	}
	return cluster, nil
}

func clusterErr(dir string, err error) error {
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return cli.Errorf("%v: install PostgreSQL 15+ (Debian: apt-get install postgresql) or set DATABASE_URL", err)
	}
	return cli.Errorf("start the local PostgreSQL in %s (its log: %s): %v", dir, filepath.Join(dir, "postgres.log"), err)
}

// Tokens mints a token per demo user (as [ksql.ReadDemo] reads them).
func Tokens(secret string, ttl time.Duration, demo []ksql.DemoUser) ([]inspector.DemoUser, error) {
	now := time.Now()
	users := make([]inspector.DemoUser, len(demo))
	for i, u := range demo {
		tok, err := auth.Mint([]byte(secret), u.ID, u.Email, now, ttl)
		if err != nil {
			return nil, cli.Errorf("JWT_SECRET: %v", err)
		}
		users[i] = inspector.DemoUser{ID: u.ID, Name: u.Name, Email: u.Email, Token: tok, Calendars: append([]string{}, u.Calendars...)}
	}
	return users, nil
}

// Calendars converts the demo calendars for the page and the banner.
func Calendars(cals []ksql.DemoCalendar) []inspector.Calendar {
	out := make([]inspector.Calendar, len(cals))
	for i, c := range cals {
		out[i] = inspector.Calendar{ID: c.ID, Name: c.Name, Color: c.Color}
	}
	return out
}

// Banner is what dev prints once it is ready.
type Banner struct {
	Addr        *net.TCPAddr // where the gateway listens
	DatabaseURL string       // printed only when it is the local cluster's (no password)
	TokenTTL    time.Duration
	Simulate    bool
	Users       []inspector.DemoUser
	Calendars   []inspector.Calendar // names the users' calendars
}

// Print writes where everything is and a token per demo user. A
// DATABASE_URL given by the user is not printed.
func (b Banner) Print(w io.Writer) {
	addr, users := b.Addr, b.Users
	host := addr.IP.String()
	if addr.IP.IsUnspecified() || addr.IP.IsLoopback() {
		host = "localhost"
	}
	base := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(addr.Port)))
	names := map[string]string{}
	for _, c := range b.Calendars {
		names[c.ID] = c.Name
	}
	fmt.Fprintf(w, "\nkoordi-realtime dev\n\n")
	fmt.Fprintf(w, "  inspector   %s/\n", base)
	fmt.Fprintf(w, "  socket.io   %s  (io(%q, { auth: { token } }))\n", base+"/socket.io/", base)
	fmt.Fprintf(w, "  metrics     %s/metrics   health %s/healthz   ready %s/readyz\n", base, base, base)
	if strings.HasPrefix(b.DatabaseURL, "postgres://postgres@127.0.0.1:") {
		fmt.Fprintf(w, "  database    psql %q\n", b.DatabaseURL)
	}
	fmt.Fprintf(w, "\ndemo users (tokens valid %s; paste one into the inspector or your client):\n", b.TokenTTL)
	for _, u := range users {
		cals := make([]string, len(u.Calendars))
		for i, c := range u.Calendars {
			if cals[i] = names[c]; cals[i] == "" {
				cals[i] = c
			}
		}
		member := "no calendars yet"
		if len(cals) > 0 {
			member = "member of " + strings.Join(cals, ", ")
		}
		fmt.Fprintf(w, "\n  %s <%s>, %s\n  %s\n", u.Name, u.Email, member, u.Token)
	}
	if b.Simulate {
		fmt.Fprintf(w, "\nsimulating writes every second; Ctrl-C stops everything\n\n")
	} else {
		fmt.Fprintf(w, "\nCtrl-C stops everything. For a stream of demo writes: make demo-writes\n\n")
	}
}

// Simulate writes the demo family's next change every second until ctx
// ends. A failed write is logged and retried with a new connection: the
// simulation must never bring the service down.
func Simulate(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), log *slog.Logger) error {
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
			c, err := connect(ctx)
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

// CoLocatedGOMAXPROCS is the GOMAXPROCS setting ("GOMAXPROCS=k") for each of
// nodes processes started on this machine, this process's GOMAXPROCS (the
// CPUs, or a container's CPU quota) shared out (at least one each), or ""
// when environ already sets GOMAXPROCS. Each Go process otherwise runs as many threads as there are CPUs: three nodes on
// two cores then keep six runnable, and the scheduling delay lands in every
// node's tail latency (on this 2-core machine p99 at 500 commits/s fell from
// about 40 to 10–12 ms with one each).
func CoLocatedGOMAXPROCS(nodes int, environ []string) string {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return ""
		}
	}
	return "GOMAXPROCS=" + strconv.Itoa(max(1, runtime.GOMAXPROCS(0)/max(1, nodes)))
}
