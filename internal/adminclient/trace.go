package adminclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Trace streams GET /trace?q into w until the server ends the stream (the
// sessions asked for were sent, or its time ran out) or ctx ends (then it
// returns ctx's error). started, if not nil, is called once the server has
// accepted the request: the watch is open, sessions that start from then
// on are traced. A refused request (400 naming the parameter, 401) is an
// error with the server's message.
func (c *Client) Trace(ctx context.Context, q url.Values, w io.Writer, started func()) error {
	path := "/trace?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+path, nil)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := *c.HTTP
	hc.Timeout = 0 // a stream: bounded by ctx and the server's duration
	res, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("cannot reach the admin server at %s: %w", c.Addr, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return c.answerError(http.MethodGet, "/trace", res, b)
	}
	if started != nil {
		started()
	}
	if _, err := io.Copy(w, res.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reading the trace from %s: %w", c.Addr, err)
	}
	return nil
}
