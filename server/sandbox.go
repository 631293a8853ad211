package main

import (
	"context"
	"errors"
	"io"
)

func sandbox(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	return errors.New("sandbox: not built yet")
}
