package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// dbConfig is the database part of every command's configuration.
type dbConfig struct {
	url         string
	slot        string
	publication string
	logFormat   string
	logLevel    string
}

func (c *dbConfig) bind(f *cli.Flags, withSlot bool) {
	f.String(&c.url, "database-url", "DATABASE_URL", "", "PostgreSQL URL of Koordi's database (required)")
	if withSlot {
		f.String(&c.slot, "slot-name", "SLOT_NAME", "koordi_realtime", "logical replication slot")
	}
	f.String(&c.publication, "publication-name", "PUBLICATION_NAME", "koordi_realtime", "publication over the watched tables")
	f.String(&c.logFormat, "log-format", "LOG_FORMAT", "text", "log format: text or json")
	f.String(&c.logLevel, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

// connect opens a plain connection; a missing URL or an unreachable database
// is a user error, reported in one line without the password.
func (c *dbConfig) connect(ctx context.Context) (*pgx.Conn, error) {
	if c.url == "" {
		return nil, cli.Errorf("DATABASE_URL is not set (flag --database-url)")
	}
	cfg, err := pgx.ParseConfig(c.url)
	if err != nil {
		return nil, cli.Errorf("DATABASE_URL is not a valid PostgreSQL URL: %v", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, cli.Errorf("cannot connect to PostgreSQL at %s:%d/%s as %s: %s", cfg.Host, cfg.Port, cfg.Database, cfg.User, cli.ConnectCause(err))
	}
	return conn, nil
}

// withConn connects, runs fn and closes the connection.
func (c *dbConfig) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(conn)
}

func runMigrate(ctx context.Context, env *environment, args []string) error {
	var db dbConfig
	f := env.flags("migrate", "Create Koordi's tables (as its Prisma migrations do) if they are missing. For development and tests.")
	db.bind(f, false)
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := db.withConn(ctx, func(conn *pgx.Conn) error { return ksql.Migrate(ctx, conn) }); err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, "migrated: Koordi tables are present")
	return nil
}

func runSetup(ctx context.Context, env *environment, args []string) error {
	var db dbConfig
	f := env.flags("setup", "Prepare an existing Koordi database: REPLICA IDENTITY FULL on the watched tables, the publication, and koordi_realtime.emit(). Idempotent; never alters Koordi's columns.")
	db.bind(f, false)
	if err := f.Parse(args); err != nil {
		return err
	}
	err := db.withConn(ctx, func(conn *pgx.Conn) error {
		if err := ksql.Setup(ctx, conn, db.publication); err != nil {
			return setupError(ctx, conn, err)
		}
		if err := ksql.Preflight(ctx, conn, db.publication); err != nil {
			return cli.User(err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "setup: publication %q, replica identity and koordi_realtime.emit are in place\n", db.publication)
	return nil
}
