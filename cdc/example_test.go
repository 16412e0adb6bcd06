package cdc_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/schema"
)

// A consumer that prints every derived event. Deliver returning nil is what
// allows the slot's position to move past the transaction.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := cdc.New(cdc.Config{
		ConnString: os.Getenv("DATABASE_URL"),
		SlotName:   "koordi_realtime_example",
		Retain:     2 * time.Minute, // a restart decodes the last two minutes again
	})
	if err != nil {
		log.Fatal(err)
	}
	err = c.Run(ctx, cdc.SinkFunc(func(_ context.Context, tx schema.Transaction) error {
		for _, ev := range tx.Events {
			fmt.Println(ev.Offset, ev.Room, ev.Event, string(ev.Data))
		}
		return nil
	}))
	if cdc.IsConfigError(err) {
		log.Fatalf("fix the configuration: %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
}
