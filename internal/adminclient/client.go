// Package adminclient is the CLI's side of the admin server: the commands
// that talk to a running daemon (`xdproxy backends`, `xdproxy backend
// set`) find its address and token as CONFIG.md says, make the request, and
// print the answer for people.
//
// Address: --admin ADDR when given, else the config's admin.address
// (--config FILE), else 127.0.0.1:9100. Token: the content of the config's
// admin.token_file when one is set (read as the daemon's preflight reads
// it: mode 0600 or stricter), sent as Authorization: Bearer TOKEN.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// DefaultAddress is where an admin command looks without --admin and
// --config.
const DefaultAddress = config.DefaultAdminAddress

// Client talks to one admin server.
type Client struct {
	Addr  string // host:port
	Token string // bearer token ("": none sent)
	HTTP  *http.Client
}

// New resolves the admin server and token for an admin command from its
// --admin and --config flags (either may be "").
func New(adminAddr, configPath string) (*Client, error) {
	c := &Client{Addr: adminAddr, HTTP: &http.Client{Timeout: 10 * time.Second}}
	if configPath != "" {
		cfg, err := config.Load(configPath)
		if err != nil {
			return nil, err
		}
		if c.Addr == "" {
			if cfg.Admin.Address == "" {
				return nil, fmt.Errorf("%s disables the admin server (admin.address is empty); pass --admin ADDR", configPath)
			}
			c.Addr = cfg.Admin.Address
		}
		if cfg.Admin.TokenFile != "" {
			if c.Token, err = config.ReadTokenFile(cfg.Admin.TokenFile); err != nil {
				return nil, fmt.Errorf("admin.token_file: %w", err)
			}
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddress
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return nil, fmt.Errorf("admin address %q is not host:port", c.Addr)
	}
	return c, nil
}

// Backends lists every listener's backends (GET /backends).
func (c *Client) Backends(ctx context.Context) (admin.BackendsDoc, error) {
	var doc admin.BackendsDoc
	err := c.do(ctx, http.MethodGet, "/backends", nil, &doc)
	return doc, err
}

// SetBackend changes a backend (POST /backends/LISTENER/BACKEND); backend
// is its address as in the configuration.
func (c *Client) SetBackend(ctx context.Context, listener, backend string, change admin.BackendChangeDoc) (admin.SetBackendDoc, error) {
	var doc admin.SetBackendDoc
	path := "/backends/" + url.PathEscape(listener) + "/" + url.PathEscape(backend)
	err := c.do(ctx, http.MethodPost, path, change, &doc)
	return doc, err
}

// do makes one request with body (JSON, nil for none) and decodes a 200
// answer into out; any other answer becomes an error with the server's
// message.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	res, b, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return c.answerError(method, path, res, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the answer of %s to %s %s is not what this xdproxy expects: %w", c.Addr, method, path, err)
	}
	return nil
}

// Reload asks the daemon to re-read its configuration file (POST /reload).
// A refused file is not an error: the outcome says Applied false and lists
// the problems.
func (c *Client) Reload(ctx context.Context) (admin.ReloadOutcome, error) {
	var out admin.ReloadOutcome
	res, b, err := c.request(ctx, http.MethodPost, "/reload", nil)
	if err != nil {
		return out, err
	}
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusUnprocessableEntity {
		return out, c.answerError(http.MethodPost, "/reload", res, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("the answer of %s to POST /reload is not what this xdproxy expects: %w", c.Addr, err)
	}
	return out, nil
}

// request makes one request with body (JSON, nil for none) and returns the
// answer and its body.
func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Addr+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, nil, c.unreachable(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer of %s: %w", c.Addr, err)
	}
	return res, b, nil
}

// unreachable is the error for a request that got no answer.
func (c *Client) unreachable(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot reach the admin server at %s: connection refused (is the daemon running, with this admin.address?)", c.Addr)
	}
	return fmt.Errorf("cannot reach the admin server at %s: %w", c.Addr, err)
}

// answerError is the error for an answer other than the one expected, with
// the server's message.
func (c *Client) answerError(method, path string, res *http.Response, b []byte) error {
	msg := strings.TrimSpace(string(b))
	var e admin.ErrorDoc
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if res.StatusCode == http.StatusUnauthorized && c.Token == "" {
		msg += " (pass --config FILE to send the token from its admin.token_file)"
	}
	return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, msg)
}
