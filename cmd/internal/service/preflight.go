package service

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// ErrPreflight marks what [Service.Preflight] found: the user must fix it
// before the node can stream. It adds nothing to the message.
var ErrPreflight = errors.New("preflight")

type preflightError struct{ err error }

func (e preflightError) Error() string        { return e.err.Error() }
func (e preflightError) Unwrap() error        { return e.err }
func (e preflightError) Is(target error) bool { return target == ErrPreflight }

func failed(format string, args ...any) error { return preflightError{fmt.Errorf(format, args...)} }

// preflightTimeout bounds the whole check when the URL sets no
// connect_timeout.
const preflightTimeout = 15 * time.Second

// Preflight checks, before anything listens, what the consumer's first
// stream start would refuse, each with its remedy: the database reachable,
// set up for streaming (sql.Preflight: wal_level, the watched tables with
// REPLICA IDENTITY FULL in the publication, the emit function), and the role
// allowed to create and read the slot (REPLICATION, SELECT on the watched
// tables). Run checks again at its first stream start; Preflight only
// moves the failure before the port is bound, so a misconfigured node
// never looks up. Every error wraps ErrPreflight.
func (s *Service) Preflight(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return failed("DATABASE_URL is not a valid PostgreSQL URL: %v", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = preflightTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failed("%w at %s:%d/%s as %s: %s", cdc.ErrUnreachable, cfg.Host, cfg.Port, cfg.Database, cfg.User, cli.ConnectCause(err))
	}
	defer conn.Close(context.Background())
	publication := s.cfg.Publication
	if publication == "" {
		publication = "koordi_realtime"
	}
	if err := ksql.Preflight(ctx, conn, publication); err != nil {
		return failed("%w", err)
	}
	if err := checkRole(ctx, conn); err != nil {
		return err
	}
	if s.cfg.Cluster == nil {
		return s.checkSlotFree(ctx, conn)
	}
	return nil // with several nodes the slot streaming elsewhere is the leader's
}

// checkSlotFree refuses to start a single node on a slot another process
// streams from: the consumer would find it at its first stream start, but
// only after the port was bound.
func (s *Service) checkSlotFree(ctx context.Context, conn *pgx.Conn) error {
	slot := s.cfg.SlotName
	if slot == "" {
		slot = "koordi_realtime"
	}
	var pid *int32
	err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot).Scan(&pid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return failed("read replication slot %q: %v", slot, cli.ConnectCause(err))
	}
	owner := "another process"
	if pid != nil {
		owner = fmt.Sprintf("backend pid %d", *pid)
	}
	return failed("%w: slot %q is streaming to %s: stop the other koordi-realtime (or use another SLOT_NAME; several nodes share one slot only with NATS_URL)",
		cdc.ErrSlotActive, slot, owner)
}

// plainIdent is a role name SQL needs no quotes for (reserved words aside,
// which are not login roles in practice).
var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// checkRole checks that the role may replicate and read the watched tables.
func checkRole(ctx context.Context, conn *pgx.Conn) error {
	var (
		role        string
		replication bool
		unreadable  []string
	)
	// Amazon RDS grants replication through the rds_replication role
	// instead of the attribute.
	if err := conn.QueryRow(ctx, `
		SELECT r.rolname, r.rolsuper OR r.rolreplication OR EXISTS (
		         SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' AND pg_has_role(r.oid, g.oid, 'MEMBER')),
		       ARRAY(SELECT t FROM unnest($1::text[]) AS t WHERE NOT has_table_privilege(quote_ident(t), 'SELECT'))
		FROM pg_roles r WHERE r.rolname = current_user`, ksql.WatchedTables).Scan(&role, &replication, &unreadable); err != nil {
		return failed("read the role's privileges: %v", cli.ConnectCause(err))
	}
	ident := role
	if !plainIdent.MatchString(role) {
		ident = pgx.Identifier{role}.Sanitize()
	}
	// Both problems at once: each needs someone else (a superuser, the
	// tables' owner) to act, so one round trip to them is better than two.
	var problems []string
	if !replication {
		problems = append(problems, fmt.Sprintf("role %s may not replicate, which the replication slot needs: have a superuser run ALTER ROLE %s REPLICATION (on Amazon RDS: GRANT rds_replication TO %s)",
			ident, ident, ident))
	}
	if len(unreadable) > 0 {
		problems = append(problems, fmt.Sprintf("role %s cannot read %s, which the service reads at start: have the tables' owner run GRANT SELECT ON %s TO %s;",
			ident, strings.Join(unreadable, ", "), strings.Join(unreadable, ", "), ident))
	}
	if len(problems) > 0 {
		return failed("%s", strings.Join(problems, "; "))
	}
	return nil
}
