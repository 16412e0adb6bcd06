package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// connect opens the regular connection used for preflight, slot checks and
// bootstrap. At the first start an unreachable database is ErrUnreachable,
// which the user must fix; later it is a connection loss, retried.
func (c *Consumer) connect(ctx context.Context, first bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	stabilise(cfg.Config.RuntimeParams)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ioTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if first && ctx.Err() == nil {
			return nil, fmt.Errorf("%w at %s:%d/%s: %v", ErrUnreachable, cfg.Host, cfg.Port, cfg.Database, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// connectReplication opens the walsender connection.
func (c *Consumer) connectReplication(ctx context.Context, first bool) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(c.cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	stabilise(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	if t := c.cfg.WalSenderTimeout; t > 0 {
		cfg.RuntimeParams["wal_sender_timeout"] = fmt.Sprintf("%dms", t.Milliseconds())
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ioTimeout
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if first && ctx.Err() == nil {
			return nil, fmt.Errorf("%w (replication connection) at %s:%d/%s: %v", ErrUnreachable, cfg.Host, cfg.Port, cfg.Database, err)
		}
		return nil, fmt.Errorf("connect for replication: %w", err)
	}
	return conn, nil
}

// stabilise makes values arrive in one text form whatever the server's
// defaults: timestamps in UTC, ISO dates.
func stabilise(params map[string]string) {
	params["TimeZone"] = "UTC"
	params["DateStyle"] = "ISO"
	if params["application_name"] == "" {
		params["application_name"] = "koordi-realtime"
	}
}

func quoteLiteral(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
