package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
)

// setupError says what to do when setup failed: the command already says
// "setup", so the error's own "setup: " goes; a privilege PostgreSQL refused
// names the role to run setup as. It is a user error either way: setup
// fails on what the database or its roles lack.
func setupError(ctx context.Context, conn *pgx.Conn, err error) error {
	msg, _ := strings.CutPrefix(err.Error(), "setup: ")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // insufficient_privilege
		return cli.User(errors.New(msg))
	}
	role, grantee, database := "this role", "<role>", "<database>"
	var name, db string
	if conn.QueryRow(ctx, `SELECT current_user, current_database()`).Scan(&name, &db) == nil {
		role, grantee, database = "role "+name, pgx.Identifier{name}.Sanitize(), pgx.Identifier{db}.Sanitize()
	}
	what := fmt.Sprintf("PostgreSQL refused it to %s (%s)", role, pgErr.Message)
	switch {
	case strings.HasPrefix(pgErr.Message, "must be owner of"):
		// REPLICA IDENTITY can only be changed by the table's owner.
		return cli.Errorf("%s: run setup as the owner of Koordi's tables (the role Prisma's migrations run as) or a superuser", what)
	case strings.Contains(pgErr.Message, "permission denied for database"):
		return cli.Errorf("%s: run setup as the owner of Koordi's tables or a superuser, or have the database's owner run GRANT CREATE ON DATABASE %s TO %s", what, database, grantee)
	}
	return cli.Errorf("%s: run setup as the owner of Koordi's tables or a superuser", what)
}
