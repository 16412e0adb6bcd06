package main

import (
	"context"
	"errors"
)

func runToken(_ context.Context, _ *environment, _ []string) error {
	return errors.New("token: not implemented yet")
}
