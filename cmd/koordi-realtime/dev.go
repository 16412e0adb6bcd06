package main

import (
	"context"
	"errors"
)

func runDev(_ context.Context, _ *environment, _ []string) error {
	return errors.New("dev: not implemented yet")
}
