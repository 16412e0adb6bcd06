package cdc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestResumesAfterPostgresRestart restarts PostgreSQL (clean and crash)
// while a writer commits single-row updates: the consumer reconnects on its
// own and every commit the writer saw succeed is decoded.
func TestResumesAfterPostgresRestart(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			url, conn := koordiDB(t)
			exec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'a@example.com', 'start')`, user1)
			rec := newRecorder()
			r := start(t, Config{ConnString: url}, rec, discard)
			waitStreaming(t, r.c)

			const total = 400
			var (
				mu    sync.Mutex
				acked = map[string]bool{}
			)
			progress := make(chan int, total)
			writerDone := make(chan error, 1)
			go func() { writerDone <- write(url, total, progress, &mu, acked) }()
			for n := range progress {
				if n == total/3 {
					break
				}
			}
			if err := cluster.Restart(context.Background(), mode); err != nil {
				t.Fatal(err)
			}
			if err := <-writerDone; err != nil {
				t.Fatal(err)
			}

			seen := map[string]bool{}
			waitFor(t, "every acknowledged commit", func() bool {
				for {
					select {
					case tx := <-rec.ch:
						for _, c := range tx.Changes {
							seen[c.New["name"].Text] = true
						}
						continue
					default:
					}
					break
				}
				mu.Lock()
				defer mu.Unlock()
				for name := range acked {
					if !seen[name] {
						return false
					}
				}
				return true
			})
			if st := r.c.Status(); st.Reconnects == 0 {
				t.Fatalf("status %+v: no reconnect recorded across a restart", st)
			}
		})
	}
}

// write commits total single-row updates, each on its own, reconnecting
// through a restart; acked records the names whose COMMIT succeeded.
func write(url string, total int, progress chan<- int, mu *sync.Mutex, acked map[string]bool) error {
	defer close(progress)
	ctx := context.Background()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(ctx)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < total; {
		if time.Now().After(deadline) {
			return fmt.Errorf("writer stuck at %d of %d", i, total)
		}
		if conn == nil {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		name := fmt.Sprintf("n-%04d", i)
		if _, err := conn.Exec(ctx, `UPDATE users SET name = $1 WHERE id = $2`, name, user1); err != nil {
			conn.Close(ctx)
			conn = nil
			continue // may or may not have committed: retried, and only acked names are required
		}
		mu.Lock()
		acked[name] = true
		mu.Unlock()
		i++
		progress <- i
	}
	return nil
}
