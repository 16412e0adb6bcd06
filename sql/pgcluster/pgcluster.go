// Package pgcluster starts and stops private PostgreSQL clusters from the
// server binaries installed on the machine, with wal_level=logical, for tests
// and for `koordi-realtime dev`.
//
// The binaries are found on PATH (initdb, pg_ctl, postgres) or under
// /usr/lib/postgresql/<version>/bin, newest version first. PostgreSQL refuses
// to run as root, so when the process is root every server command runs as
// the postgres user through runuser, and the data directory is handed to
// that user.
//
// A cluster listens on 127.0.0.1 on a free port and on a Unix socket inside
// its directory; authentication is trust for the superuser "postgres".
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinaries means no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin")

// ErrPortInUse means the port the cluster was to listen on is taken by
// another process; a reused Dir keeps its port, so a caller may move it with
// Config.Port (see [FreePort]).
var ErrPortInUse = errors.New("port already in use")

// Config says where and how to run a cluster. The zero value is a temporary
// cluster on a free port, removed by Stop.
type Config struct {
	// Dir holds the data directory ("data") and the log ("postgres.log").
	// Empty means a new temporary directory that Stop removes. A Dir that
	// already holds a data directory is reused as it is.
	Dir string
	// Port to listen on; 0 picks a free one. A reused Dir keeps the port it
	// was created with unless Port is set.
	Port int
	// Settings are extra postgresql.conf settings, passed as -c name=value.
	Settings map[string]string
}

// Cluster is a running PostgreSQL server.
type Cluster struct {
	dir     string
	temp    bool
	port    int
	bin     string
	asUser  *user.User // non-nil when commands run through runuser
	stopMu  sync.Mutex
	stopped bool
}

// defaultSettings make a cluster fast and ready for logical replication.
// fsync=off is safe here: the cluster's data is disposable and a PostgreSQL
// crash in tests is simulated with pg_ctl stop -m immediate, which keeps the
// OS page cache intact. max_replication_slots keeps PostgreSQL's default
// (10): a test's database has its slots dropped when the test ends
// (NewDatabase), and no test holds more than a few at once.
var defaultSettings = map[string]string{
	"wal_level":          "logical",
	"max_wal_senders":    "40",
	"fsync":              "off",
	"full_page_writes":   "off",
	"synchronous_commit": "on",
	"listen_addresses":   "127.0.0.1",
	"max_connections":    "200",
	"shared_buffers":     "64MB",
	"log_min_messages":   "warning",
}

// Start creates (or reuses) and starts a cluster. The returned cluster must
// be stopped with Stop.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: cfg.Dir, bin: bin, port: cfg.Port}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
		}
		c.asUser = u
	}
	if c.dir == "" {
		c.dir, err = os.MkdirTemp("", "koordi-pg-")
		if err != nil {
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
		c.temp = true
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create cluster dir: %w", err)
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return nil, err
	}
	if err := c.chown(c.dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir(), "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			c.cleanup()
			return nil, err
		}
	}
	if c.port == 0 {
		c.port = c.savedPort()
	}
	if c.port == 0 {
		if c.port, err = FreePort(); err != nil {
			c.cleanup()
			return nil, err
		}
	} else if !portFree(c.port) {
		c.cleanup()
		return nil, fmt.Errorf("%w: 127.0.0.1:%d", ErrPortInUse, c.port)
	}
	settings := map[string]string{}
	for k, v := range defaultSettings {
		settings[k] = v
	}
	for k, v := range cfg.Settings {
		settings[k] = v
	}
	settings["port"] = strconv.Itoa(c.port)
	settings["unix_socket_directories"] = c.dir
	if err := c.writeConf(settings); err != nil {
		c.cleanup()
		return nil, err
	}
	if err := c.startServer(ctx); err != nil {
		c.cleanup()
		return nil, err
	}
	return c, nil
}

// Dir is the cluster's directory.
func (c *Cluster) Dir() string { return c.dir }

// PostmasterPID is the server's main process (postmaster.pid's first
// line): its CPU time, and its children's, are PostgreSQL's.
func (c *Cluster) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// Port is the TCP port the server listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// ConnString is a URL for database db as the superuser postgres.
func (c *Cluster) ConnString(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// CreateDatabase creates database name (if missing) and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect to cluster: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up database %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return c.ConnString(name), nil
}

// DropInactiveSlots drops the replication slots of database db that no
// session is using (active = false) and returns their names, and those of
// the slots it left because they are in use. It first waits up to wait for
// active slots to be released, since the WAL sender of a process stopped a
// moment ago takes a moment to exit; slots still active after that are left
// alone (something still streams from them), as is every slot of another
// database.
func (c *Cluster) DropInactiveSlots(ctx context.Context, db string, wait time.Duration) (dropped, busy []string, err error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to cluster: %w", err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(wait)
	var slots []slotState
	for {
		rows, err := conn.Query(ctx, `SELECT slot_name, active FROM pg_replication_slots WHERE database = $1 ORDER BY slot_name`, db)
		if err != nil {
			return nil, nil, fmt.Errorf("slots of %s: %w", db, err)
		}
		if slots, err = pgx.CollectRows(rows, pgx.RowToStructByPos[slotState]); err != nil {
			return nil, nil, fmt.Errorf("slots of %s: %w", db, err)
		}
		if !slices.ContainsFunc(slots, func(s slotState) bool { return s.Active }) || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, s := range slots {
		if s.Active {
			busy = append(busy, s.Name)
			continue
		}
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, s.Name)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			dropped = append(dropped, s.Name)
		case errors.As(err, &pgErr) && pgErr.Code == "55006": // object_in_use: taken since the query
			busy = append(busy, s.Name)
		case errors.As(err, &pgErr) && pgErr.Code == "42704": // undefined_object: dropped since
		default:
			return dropped, busy, fmt.Errorf("drop slot %s: %w", s.Name, err)
		}
	}
	return dropped, busy, nil
}

type slotState struct {
	Name   string
	Active bool
}

// Restart stops the server with the given pg_ctl mode ("fast" for a clean
// shutdown, "immediate" to simulate a crash) and starts it again on the same
// port. Existing connections are cut.
func (c *Cluster) Restart(ctx context.Context, mode string) error {
	return c.RestartAfter(ctx, mode, 0)
}

// RestartAfter is Restart with the server down for at least down, as an
// outage or a failover that takes a while.
func (c *Cluster) RestartAfter(ctx context.Context, mode string, down time.Duration) error {
	if err := c.pgctl(ctx, "stop", "-m", mode); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.startServer(ctx)
}

// Stop shuts the server down (fast mode) and, for a temporary cluster,
// removes its directory. Safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.pgctl(ctx, "stop", "-m", "fast")
	if err != nil {
		err = fmt.Errorf("stop postgres: %w", err)
	}
	c.cleanup()
	return err
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

func (c *Cluster) cleanup() {
	if c.temp {
		_ = os.RemoveAll(c.dir)
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	out, err := c.command(ctx, "initdb", "-D", c.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

// writeConf puts the settings in an included file so postgresql.conf stays
// initdb's own and a reused directory picks up new settings.
func (c *Cluster) writeConf(settings map[string]string) error {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by koordi-realtime pgcluster on every start\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	conf := filepath.Join(c.dataDir(), "koordi.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", conf, err)
	}
	if err := c.chown(conf); err != nil {
		return err
	}
	main := filepath.Join(c.dataDir(), "postgresql.conf")
	body, err := os.ReadFile(main)
	if err != nil {
		return fmt.Errorf("read %s: %w", main, err)
	}
	if !strings.Contains(string(body), "include_if_exists = 'koordi.conf'") {
		body = append(body, []byte("\ninclude_if_exists = 'koordi.conf'\n")...)
		if err := os.WriteFile(main, body, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", main, err)
		}
	}
	return nil
}

// savedPort reads the port a reused directory was last started with.
func (c *Cluster) savedPort() int {
	body, err := os.ReadFile(filepath.Join(c.dataDir(), "koordi.conf"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "port = '"); ok {
			p, _ := strconv.Atoi(strings.TrimSuffix(v, "'"))
			return p
		}
	}
	return 0
}

func (c *Cluster) startServer(ctx context.Context) error {
	// A stale postmaster.pid from a killed run makes pg_ctl refuse; pg_ctl
	// itself checks whether that pid is alive, so only a dead one is removed.
	if err := c.pgctl(ctx, "start", "-w", "-t", "60", "-l", c.logFile()); err != nil {
		log, _ := os.ReadFile(c.logFile())
		return fmt.Errorf("start postgres: %w: %s", err, lastLines(log, 10))
	}
	return nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	args = append([]string{"-D", c.dataDir()}, args...)
	cmd := c.command(ctx, "pg_ctl", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s: %w: %s", args[2], err, lastLines(out, 5))
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asUser != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.asUser.Username, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	// The server must outlive a cancelled context of the caller only through
	// pg_ctl, which daemonises it; the commands themselves are short.
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

func (c *Cluster) chown(path string) error {
	if c.asUser == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.asUser.Uid)
	gid, _ := strconv.Atoi(c.asUser.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("hand %s to the postgres user: %w", path, err)
	}
	return nil
}

// findBinaries returns the directory holding initdb, pg_ctl and postgres.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// BinDir returns the directory of the server binaries Start uses, for callers
// that run other PostgreSQL tools (pg_recvlogical) of the same version.
func BinDir() (string, error) { return findBinaries() }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// StopLeftover stops a server still running from dir's data directory — the
// cluster of an earlier run that was killed before it could stop it — and
// returns its process id (0 when none runs). A stale postmaster.pid of a dead
// server is left to pg_ctl start, which handles it.
func StopLeftover(ctx context.Context, dir string) (int, error) {
	bin, err := findBinaries()
	if err != nil {
		return 0, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	c := &Cluster{dir: abs, bin: bin}
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, nil // not running, or never created
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0, nil
	}
	if os.Geteuid() == 0 {
		if c.asUser, err = user.Lookup("postgres"); err != nil {
			return 0, fmt.Errorf("running as root needs a postgres user to run the server as: %w", err)
		}
	}
	if err := c.pgctl(ctx, "stop", "-m", "fast", "-w"); err != nil {
		return pid, fmt.Errorf("stop the PostgreSQL left running in %s: %w", dir, err)
	}
	return pid, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
