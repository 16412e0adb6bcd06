package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/gateway/auth"
)

// runToken mints a development JWT shaped as Koordi's API issues them
// (HS256 over JWT_SECRET, claims userId, email, iat, exp) and prints it.
func runToken(_ context.Context, env *environment, args []string) error {
	var (
		secret, userID, email string
		ttl                   time.Duration
	)
	f := env.flags("token", "Mint a development JWT as Koordi's API issues them and print it on stdout.")
	f.String(&secret, "jwt-secret", "JWT_SECRET", "", "HS256 secret, at least 32 bytes (required)")
	f.String(&userID, "user-id", "", "", "Koordi user id, a uuid (required)")
	f.String(&email, "email", "", "", "email claim")
	f.Duration(&ttl, "ttl", "", 7*24*time.Hour, "lifetime of the token")
	if err := f.Parse(args); err != nil {
		return err
	}
	switch {
	case secret == "":
		return cli.Errorf("JWT_SECRET is not set (flag --jwt-secret)")
	case userID == "":
		return cli.Errorf("--user-id is required")
	case ttl <= 0:
		return cli.Errorf("--ttl must be positive")
	}
	tok, err := auth.Mint([]byte(secret), userID, email, time.Now(), ttl)
	if errors.Is(err, auth.ErrWeakSecret) {
		return cli.Errorf("JWT_SECRET: %v", err)
	}
	if err != nil {
		return cli.Errorf("%v", err)
	}
	fmt.Fprintln(env.stdout, tok)
	return nil
}
