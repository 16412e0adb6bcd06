package sql

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

var (
	//go:embed koordi.sql
	koordiSQL string
	//go:embed setup.sql
	setupSQL string
)

// WatchedTables are the Koordi tables the publication carries, in dependency
// order. Derivation rules exist for each of them.
var WatchedTables = []string{
	"users",
	"event_calendars",
	"event_calendar_memberships",
	"events",
	"supplemental_events",
}

// The table koordi_realtime.emit writes explicit events to, in the
// publication beside [WatchedTables]: the stream takes explicit events from
// its inserts only (never from bare logical decoding messages, which any role
// may write). Its one column, message, holds {"room", "event", "data"}.
const (
	EmitSchema = "koordi_realtime"
	EmitTable  = "emitted"
	// MaxEmitBytes bounds an explicit event's message; emit refuses a longer
	// one (setup.sql says 1048576 too). Socket.IO clients refuse frames over
	// their 1 MB maxPayload, so anything near it could never be delivered.
	MaxEmitBytes = 1 << 20
)

// emitQualified is the emit table as the publication names it.
var emitQualified = pgx.Identifier{EmitSchema, EmitTable}.Sanitize()

// Sentinel errors of [Preflight]; each wraps into a message that says what to do.
var (
	ErrWALLevel        = errors.New("wal_level is not logical")
	ErrMissingTable    = errors.New("watched table missing")
	ErrReplicaIdentity = errors.New("replica identity is not FULL")
	ErrNoPublication   = errors.New("publication missing")
	ErrNoEmitFunction  = errors.New("emit function missing")
	// ErrForeignOwner: the koordi_realtime schema or its table exists and
	// belongs to a role the one running setup is not a member of. Its owner
	// could replace what setup makes there (and so write explicit events to
	// any room), so setup refuses to build on it.
	ErrForeignOwner = errors.New("owned by another role")
)

// Migrate creates Koordi's tables if they do not exist.
func Migrate(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, koordiSQL); err != nil {
		return fmt.Errorf("migrate koordi schema: %w", err)
	}
	return nil
}

// Setup makes an existing Koordi database ready for the service: replica
// identity, the koordi_realtime schema with the emit function and its table,
// and the publication named publication over [WatchedTables] and the emit
// table. Running it again changes nothing; an existing publication is
// extended with any table it lacks, and an emit function of an older setup
// is replaced (and its EXECUTE revoked from PUBLIC).
func Setup(ctx context.Context, conn *pgx.Conn, publication string) error {
	if publication == "" {
		return errors.New("setup: empty publication name")
	}
	if err := setupObjects(ctx, conn); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).Scan(&exists); err != nil {
		return fmt.Errorf("setup: look up publication: %w", err)
	}
	pub := pgx.Identifier{publication}.Sanitize()
	if !exists {
		quoted := make([]string, 0, len(WatchedTables)+1)
		for _, t := range WatchedTables {
			quoted = append(quoted, pgx.Identifier{t}.Sanitize())
		}
		quoted = append(quoted, emitQualified)
		if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pub, strings.Join(quoted, ", "))); err != nil {
			return fmt.Errorf("setup: create publication %s: %w", publication, err)
		}
		return nil
	}
	missing, err := publicationMissing(ctx, conn, publication)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	for _, t := range missing {
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pub, t)); err != nil {
			return fmt.Errorf("setup: add %s to publication %s: %w", t, publication, err)
		}
	}
	return nil
}

// setupObjects runs setup.sql in one transaction, with the ownership check
// before it (so nothing is made in a planted schema) and after it (a schema
// planted between the check and CREATE SCHEMA IF NOT EXISTS is refused and
// what was made rolled back).
func setupObjects(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if err := checkOwnership(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, setupSQL); err != nil {
		return err
	}
	if err := checkOwnership(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// checkOwnership refuses a koordi_realtime schema, or an emitted table in
// it, that setup did not make: CREATE ... IF NOT EXISTS would adopt an
// object another role planted before the first setup, and that role, as the
// schema's owner, could later drop and replace the table the stream takes
// explicit events from.
func checkOwnership(ctx context.Context, conn pgx.Tx) error {
	// Trusted owners: the role running setup, the roles it is a member of
	// (not by being superuser: for a superuser pg_has_role says yes to
	// every role), and superusers.
	rows, err := conn.Query(ctx, `
		WITH RECURSIVE mine(oid) AS (
		    SELECT oid FROM pg_roles WHERE rolname = current_user
		    UNION SELECT m.roleid FROM pg_auth_members m JOIN mine ON m.member = mine.oid),
		owned(what, owner) AS (
		    SELECT 'schema '||n.nspname, n.nspowner FROM pg_namespace n WHERE n.nspname = $1
		    UNION ALL
		    SELECT 'table '||n.nspname||'.'||c.relname, c.relowner
		      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		     WHERE n.nspname = $1 AND c.relname = $2)
		SELECT o.what, r.rolname, r.rolsuper OR o.owner IN (SELECT oid FROM mine)
		  FROM owned o JOIN pg_roles r ON r.oid = o.owner`, EmitSchema, EmitTable)
	if err != nil {
		return fmt.Errorf("check the owner of schema %s: %w", EmitSchema, err)
	}
	defer rows.Close()
	for rows.Next() {
		var what, owner string
		var ours bool
		if err := rows.Scan(&what, &owner, &ours); err != nil {
			return fmt.Errorf("check the owner of schema %s: %w", EmitSchema, err)
		}
		if !ours {
			return fmt.Errorf("%s exists and is %w %s: if that role ran an earlier setup, run setup as it (or a member of it); if not, it was planted: drop it and run setup again", what, ErrForeignOwner, owner)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check the owner of schema %s: %w", EmitSchema, err)
	}
	return nil
}

// publicationMissing lists the tables the publication should carry and does
// not, quoted for ALTER PUBLICATION.
func publicationMissing(ctx context.Context, conn *pgx.Conn, publication string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = current_schema()
		UNION ALL
		SELECT '' FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`,
		publication, EmitSchema, EmitTable)
	if err != nil {
		return nil, fmt.Errorf("list publication tables: %w", err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list publication tables: %w", err)
	}
	var missing []string
	for _, t := range WatchedTables {
		if !slices.Contains(have, t) {
			missing = append(missing, pgx.Identifier{t}.Sanitize())
		}
	}
	if !slices.Contains(have, "") { // the emit table's row
		missing = append(missing, emitQualified)
	}
	return missing, nil
}

// TableProblem is what is wrong with one watched table for streaming.
type TableProblem struct {
	Table string
	// Err wraps ErrMissingTable, ErrReplicaIdentity or ErrNoPublication and
	// says what to do.
	Err error
}

// Problem is the metric label of the problem: "missing",
// "replica_identity" or "not_published".
func (p TableProblem) Problem() string {
	switch {
	case errors.Is(p.Err, ErrMissingTable):
		return "missing"
	case errors.Is(p.Err, ErrReplicaIdentity):
		return "replica_identity"
	}
	return "not_published"
}

// CheckTables reports, for each watched table that cannot be streamed fully,
// what is wrong: it is missing, its replica identity is not FULL (updates and
// deletes then carry no old values to derive from), or the publication does
// not carry it (its changes are not streamed at all). The emit table
// (koordi_realtime.emitted) is checked the same way except for its replica
// identity (only its inserts are read): without it in the publication every
// explicit event would be lost. The publication itself must exist (see
// Preflight). One query; watched tables are found on the search_path, as
// Koordi's Prisma migrations create them.
func CheckTables(ctx context.Context, conn *pgx.Conn, publication string) ([]TableProblem, error) {
	names := append(slices.Clone(WatchedTables), EmitSchema+"."+EmitTable)
	lookups := append(watchedLookups(), "") // the emit table: found in the catalog below, not by to_regclass
	// The service's role need not have USAGE on the koordi_realtime schema
	// (only emit's callers do), and to_regclass would refuse to look into it;
	// the catalog is readable by every role.
	rows, err := conn.Query(ctx, `
		SELECT t.name, c.oid IS NOT NULL, coalesce(c.relreplident::text, ''),
		       EXISTS (SELECT 1 FROM pg_publication_tables p
		                WHERE p.pubname = $1 AND p.schemaname = n.nspname AND p.tablename = c.relname)
		FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(name, lookup, ord)
		LEFT JOIN pg_class c ON c.relkind IN ('r', 'p') AND c.oid = CASE
		       WHEN t.lookup <> '' THEN to_regclass(t.lookup)
		       ELSE (SELECT e.oid FROM pg_class e JOIN pg_namespace en ON en.oid = e.relnamespace
		              WHERE en.nspname = $4 AND e.relname = $5) END
		LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
		ORDER BY t.ord`, publication, names, lookups, EmitSchema, EmitTable)
	if err != nil {
		return nil, fmt.Errorf("check watched tables: %w", err)
	}
	var problems []TableProblem
	for rows.Next() {
		var (
			table, ident      string
			exists, published bool
		)
		if err := rows.Scan(&table, &exists, &ident, &published); err != nil {
			rows.Close()
			return nil, fmt.Errorf("check watched tables: %w", err)
		}
		emitTable := table == names[len(names)-1]
		switch {
		case !exists && emitTable:
			problems = append(problems, TableProblem{table, fmt.Errorf("%w: table %s not found: run `koordi-realtime setup`", ErrMissingTable, table)})
		case !exists:
			problems = append(problems, TableProblem{table, fmt.Errorf("%w: table %q not found on the search_path (or this role lacks USAGE on its schema: have the schema's owner GRANT it): is DATABASE_URL the Koordi database? (`koordi-realtime migrate` creates the tables for development)", ErrMissingTable, table)})
		case ident != "f" && !emitTable:
			problems = append(problems, TableProblem{table, fmt.Errorf("%w on table %q: run `koordi-realtime setup`", ErrReplicaIdentity, table)})
		case !published:
			problems = append(problems, TableProblem{table, fmt.Errorf("%w: %q does not carry %s: run `koordi-realtime setup`", ErrNoPublication, publication, table)})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("check watched tables: %w", err)
	}
	return problems, nil
}

// watchedLookups are the watched tables' names as to_regclass resolves them
// on the search_path: quoted, unqualified.
func watchedLookups() []string {
	lookups := make([]string, 0, len(WatchedTables)+1)
	for _, t := range WatchedTables {
		lookups = append(lookups, pgx.Identifier{t}.Sanitize())
	}
	return lookups
}

// WatchedSchemas returns the schema each watched table is found in on the
// connection's search_path, as CheckTables finds them; a table not found is
// left out. The stream names each relation's schema, and a table of the same
// name in another schema (one a role without grants may create, carried by
// a publication FOR ALL TABLES) is not Koordi's.
func WatchedSchemas(ctx context.Context, conn *pgx.Conn) (map[string]string, error) {
	lookups := watchedLookups()
	rows, err := conn.Query(ctx, `
		SELECT t.name, n.nspname
		FROM unnest($1::text[], $2::text[]) AS t(name, lookup)
		JOIN pg_class c ON c.oid = to_regclass(t.lookup)
		JOIN pg_namespace n ON n.oid = c.relnamespace`, WatchedTables, lookups)
	if err != nil {
		return nil, fmt.Errorf("find watched tables: %w", err)
	}
	schemas := make(map[string]string, len(WatchedTables))
	for rows.Next() {
		var table, schema string
		if err := rows.Scan(&table, &schema); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find watched tables: %w", err)
		}
		schemas[table] = schema
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find watched tables: %w", err)
	}
	return schemas, nil
}

// Preflight checks that the database can be streamed from: wal_level, the
// publication and the emit function (see PreflightStream), and the watched
// tables with REPLICA IDENTITY FULL in the publication (see CheckTables).
// The error wraps one of the sentinels above and names the fix.
func Preflight(ctx context.Context, conn *pgx.Conn, publication string) error {
	problems, err := CheckTables(ctx, conn, publication)
	if err != nil {
		return err
	}
	// The most basic first: a database without Koordi's tables is probably
	// the wrong DATABASE_URL, whatever else is missing.
	for _, p := range problems {
		if !errors.Is(p.Err, ErrNoPublication) {
			if err := checkWALLevel(ctx, conn); err != nil {
				return err
			}
			return p.Err
		}
	}
	if err := PreflightStream(ctx, conn, publication); err != nil {
		return err
	}
	if len(problems) > 0 {
		return problems[0].Err
	}
	return nil
}

func checkWALLevel(ctx context.Context, conn *pgx.Conn) error {
	var walLevel string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&walLevel); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("%w (it is %q): have a superuser run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL", ErrWALLevel, walLevel)
	}
	return nil
}

// PreflightStream checks what streaming cannot do without at all: wal_level
// logical, the publication and the emit function. A watched table that is
// missing from the publication or has the wrong replica identity is not in
// its way (CheckTables reports those): a running service keeps streaming the
// rest and says so.
func PreflightStream(ctx context.Context, conn *pgx.Conn, publication string) error {
	if err := checkWALLevel(ctx, conn); err != nil {
		return err
	}
	var exists bool
	if err := conn.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).Scan(&exists); err != nil {
		return fmt.Errorf("look up publication: %w", err)
	}
	if !exists {
		return fmt.Errorf("%w: %q: run `koordi-realtime setup`", ErrNoPublication, publication)
	}
	// An emit of an older setup writes bare logical messages, which the
	// stream ignores: its callers' events would vanish without a word.
	var current bool
	if err := conn.QueryRow(ctx,
		`SELECT count(*) > 0, coalesce(bool_and(p.prosecdef), false)
		   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		  WHERE n.nspname = $1 AND p.proname = 'emit'`, EmitSchema).Scan(&exists, &current); err != nil {
		return fmt.Errorf("look up emit function: %w", err)
	}
	if !exists {
		return fmt.Errorf("%w: koordi_realtime.emit: run `koordi-realtime setup`", ErrNoEmitFunction)
	}
	if !current {
		return fmt.Errorf("%w: koordi_realtime.emit is an older version whose events the stream no longer reads: run `koordi-realtime setup`", ErrNoEmitFunction)
	}
	return nil
}
