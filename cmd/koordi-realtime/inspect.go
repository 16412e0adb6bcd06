package main

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cmd/internal/service"
)

// inspectorLink gives the inspector page what only the running service
// knows (a token's rooms). The page's handler is built before the service
// (it is part of the service's configuration), so the service is set once
// built, before anything is served.
type inspectorLink struct{ svc *service.Service }

func (l *inspectorLink) rooms(token string) (string, []string, error) {
	if l.svc == nil {
		return "", nil, errors.New("starting")
	}
	return l.svc.Rooms(token)
}

// devEmit sends a test event the way an application does, with
// koordi_realtime.emit in a transaction of its own on dev's database, so it
// travels the whole path: WAL, decoding, derivation, fan-out.
func devEmit(db dbConfig) func(ctx context.Context, room, event string, data []byte) error {
	return func(ctx context.Context, room, event string, data []byte) error {
		return db.withConn(ctx, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `SELECT koordi_realtime.emit($1, $2, $3::jsonb)`, room, event, string(data))
			return err
		})
	}
}
