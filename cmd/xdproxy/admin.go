package main

// The commands that talk to a running daemon through its admin server
// (CONFIG.md): flags and exit codes here, the client in internal/adminclient.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/xdproxy/xdproxy/internal/adminclient"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// adminFlags are every admin command's --admin and --config.
type adminFlags struct {
	addr, config *string
}

func newAdminFlagSet(name string, stderr io.Writer) (*flag.FlagSet, adminFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, adminFlags{
		addr:   fs.String("admin", "", "admin server host:port (default: the config's admin.address, else "+adminclient.DefaultAddress+")"),
		config: fs.String("config", "", "configuration file: its admin.address and admin.token_file"),
	}
}

func (f adminFlags) client() (*adminclient.Client, error) { return adminclient.New(*f.addr, *f.config) }

// parseInterspersed parses flags that may come before, between or after
// the positional arguments (`backend set web 10.0.0.2:80 --state drain`),
// which flag.Parse alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

const adminTimeout = 15 * time.Second

// callAdmin resolves the admin server from the flags and runs fn against
// it with a bounded time; a failure is one line on stderr and exit 1.
func callAdmin(name string, af adminFlags, stderr io.Writer, fn func(context.Context, *adminclient.Client) error) int {
	c, err := af.client()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		err = fn(ctx, c)
	}
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy %s: %v\n", name, err)
		return 1
	}
	return 0
}

func backendsCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("backends", stderr)
	asJSON := fs.Bool("json", false, "print the admin server's JSON (GET /backends)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "xdproxy backends: unexpected argument %q\n%s\n", rest[0], usage)
		return 2
	}
	return callAdmin("backends", af, stderr, func(ctx context.Context, c *adminclient.Client) error {
		doc, err := c.Backends(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(doc)
		}
		return adminclient.WriteBackends(stdout, doc)
	})
}

func backendSetCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("backend set", stderr)
	state := fs.String("state", "", "ready | drain | maint")
	weight := fs.Int("weight", -1, "the backend's weight, 0 to 65535 (0: no new sessions)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) != 2 {
		fmt.Fprintf(stderr, "xdproxy backend set: expected LISTENER BACKEND, got %d arguments\n%s\n", len(rest), usage)
		return 2
	}
	var change admin.BackendChangeDoc
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "state":
			change.State = state
		case "weight":
			change.Weight = weight
		}
	})
	if change.State == nil && change.Weight == nil {
		fmt.Fprintf(stderr, "xdproxy backend set: nothing to change: give --state and/or --weight\n%s\n", usage)
		return 2
	}
	return callAdmin("backend set", af, stderr, func(ctx context.Context, c *adminclient.Client) error {
		doc, err := c.SetBackend(ctx, rest[0], rest[1], change)
		if err != nil {
			return err
		}
		return adminclient.WriteBackend(stdout, doc)
	})
}

func reloadCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("reload", stderr)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "xdproxy reload: unexpected argument %q\n%s\n", rest[0], usage)
		return 2
	}
	refused := false
	code := callAdmin("reload", af, stderr, func(ctx context.Context, c *adminclient.Client) error {
		out, err := c.Reload(ctx)
		if err != nil {
			return err
		}
		if !out.Applied {
			refused = true
			fmt.Fprintln(stderr, adminclient.FormatReload(out))
			return nil
		}
		fmt.Fprintln(stdout, adminclient.FormatReload(out))
		return nil
	})
	if refused {
		return 1
	}
	return code
}

func ssCmd(args []string, stdout, stderr io.Writer) int {
	fs, af := newAdminFlagSet("ss", stderr)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	filter, err := adminclient.ParseSSFilter(rest)
	if err != nil {
		fmt.Fprintf(stderr, "xdproxy ss: %v\n%s\n", err, usage)
		return 2
	}
	return callAdmin("ss", af, stderr, func(ctx context.Context, c *adminclient.Client) error {
		conns, err := c.Connections(ctx, filter.StateParam())
		if err != nil {
			return err
		}
		kept := conns[:0]
		for _, x := range conns {
			if filter.Match(x) {
				kept = append(kept, x)
			}
		}
		return adminclient.WriteSS(stdout, kept)
	})
}
