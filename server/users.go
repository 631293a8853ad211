package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
	"github.com/feedgate/feedgate/server/store"
)

const usersUsage = `Usage:
  feedgate users create --name NAME [--admin] [--data-dir DIR]   prints the new API key alone on stdout
  feedgate users list [--data-dir DIR]
  feedgate users revoke --name NAME [--data-dir DIR]
`

// users runs "users create|list|revoke". Only the new key goes to stdout, so
// scripts can capture it; messages go to stderr.
func users(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usersUsage)
		return errors.New("users: missing subcommand")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("feedgate users "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDir := config.DefaultDataDir
	if v := getenv("FEEDGATE_DATA_DIR"); v != "" {
		defDir = v
	}
	dataDir := fs.String("data-dir", defDir, "data directory (FEEDGATE_DATA_DIR)")
	var name *string
	var admin *bool
	switch sub {
	case "create":
		name = fs.String("name", "", "the user's name (letters, digits, . - _ @)")
		admin = fs.Bool("admin", false, "allow AdminService")
	case "revoke":
		name = fs.String("name", "", "the user whose key to revoke")
	case "list":
	default:
		fmt.Fprint(stderr, usersUsage)
		return fmt.Errorf("users: unknown subcommand %q", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("users %s: unexpected argument %q", sub, fs.Arg(0))
	}
	if name != nil && *name == "" {
		return fmt.Errorf("users %s: --name is required", sub)
	}
	st, err := gateway.OpenStore(ctx, *dataDir, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "create":
		u, key, err := auth.CreateUser(ctx, st, *name, *admin, time.Now())
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("users create: a user named %q already exists", *name)
		}
		if err != nil {
			return fmt.Errorf("users create: %w", err)
		}
		role := "user"
		if u.Admin {
			role = "admin"
		}
		fmt.Fprintf(stderr, "created %s %q (%s); its API key follows on stdout and is not shown again\n", role, u.Name, u.ID)
		_, err = fmt.Fprintln(stdout, key.Reveal())
		return err
	case "revoke":
		u, err := st.UserByName(ctx, *name)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("users revoke: no user named %q", *name)
		}
		if err != nil {
			return err
		}
		if err := st.RevokeUser(ctx, u.ID, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "revoked the API key of %q (%s); its broker connections are disconnected and its pending logins refused\n", u.Name, u.ID)
		return nil
	default: // list
		us, err := st.ListUsers(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tSTATUS")
		for _, u := range us {
			role, status := "user", "active"
			if u.Admin {
				role = "admin"
			}
			if !u.Active() {
				status = "revoked " + u.RevokedAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.ID, u.Name, role, u.CreatedAt.Local().Format(time.DateTime), status)
		}
		return tw.Flush()
	}
}
