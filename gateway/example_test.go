package gateway_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// The gateway standalone: memberships from Koordi's database, the Socket.IO
// endpoint on /socket.io/, events published in commit order.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{
		JWTSecret:      []byte(os.Getenv("JWT_SECRET")),
		Memberships:    gateway.PGMemberships{Pool: pool},
		AllowedOrigins: []string{"http://localhost:5173"},
		Registerer:     prometheus.NewRegistry(),
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", g.Handler())
	go func() { _ = http.ListenAndServe("127.0.0.1:3000", mux) }()

	// From the replication stream, one committed transaction at a time:
	_ = g.Publish(ctx, schema.Transaction{
		CommitLSN: 0x169A3F8,
		Events: []schema.Envelope{{
			Offset: schema.Offset{LSN: 0x169A3F8},
			Room:   schema.CalendarRoom("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"),
			Event:  schema.CalendarSynced,
			Data:   []byte(`{"calendar_id":"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"}`),
		}},
	})
	_ = g.Shutdown(ctx)
}
