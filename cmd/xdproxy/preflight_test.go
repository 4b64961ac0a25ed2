package main

// `xdproxy check` and `run` hold the file against the host they run on
// (internal/preflight): the daemon binary in lab namespaces. Need root.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// inNS runs the daemon binary with args inside ns and returns its exit code
// and output.
func inNS(t *testing.T, ns *lab.NS, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, xdproxyBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("xdproxy %s in %s: %v", strings.Join(args, " "), ns.Name, err)
	}
	return code, out.String(), errb.String()
}

// TestPreflightRouting: a proxy namespace with two veths, e0 (clients,
// 10.0.1.1/24, configured) and e1 (10.0.3.1/24), and a backend on e1's
// network. With only e0 under interfaces:, check and run name that backend
// and the kernel's route to it, one line, and exit 1; with e1 added, check
// says ok.
func TestPreflightRouting(t *testing.T) {
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	px, err := l.NS("px")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := l.NS("peer")
	if err != nil {
		t.Fatal(err)
	}
	prefixes := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	v0, err := l.Link(px, "e0", peer, "f0", lab.LinkOpts{AAddrs: prefixes("10.0.1.1/24"), BAddrs: prefixes("10.0.1.2/24")})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := l.Link(px, "e1", peer, "f1", lab.LinkOpts{AAddrs: prefixes("10.0.3.1/24"), BAddrs: prefixes("10.0.3.2/24")})
	if err != nil {
		t.Fatal(err)
	}
	e0, e1 := v0.A.Name, v1.A.Name

	cfg := fmt.Sprintf(`interfaces:
  - name: %s
listeners:
  - name: web
    address: 10.0.1.1:80
    backends:
      - address: 10.0.1.2:8080
      - address: 10.0.3.2:8080 # BAD
admin:
  address: ""
`, e0)
	path := writeConfig(t, "xdproxy.yaml", cfg)
	want := fmt.Sprintf("%s:%d: listeners[0].backends[1].address: 10.0.3.2:8080 is routed via %s (10.0.3.0/24 dev %s src 10.0.3.1), not through a configured interface (%s); add %s under interfaces: or use dial: kernel\n",
		path, badLine(t, cfg), e1, e1, e0, e1)

	start := time.Now()
	code, out, errs := inNS(t, px, "check", "--config", path)
	t.Logf("check: %v", time.Since(start).Round(time.Millisecond))
	if code != 1 || out != "" || errs != want {
		t.Errorf("check with the backend behind %s: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and exactly:\n%s", e1, code, out, errs, want)
	}
	// run refuses with the same line, before it attaches anything.
	code, out, errs = inNS(t, px, "run", "--config", path)
	if code != 1 || out != "" || errs != want {
		t.Errorf("run with the backend behind %s: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and exactly:\n%s", e1, code, out, errs, want)
	}
	// --no-preflight checks the file alone.
	if code, out, errs := inNS(t, px, "check", "--no-preflight", "--config", path); code != 0 || out != "ok\n" {
		t.Errorf("check --no-preflight: exit %d, stdout %q, stderr %q; want 0 and ok", code, out, errs)
	}

	fixed := strings.Replace(cfg, "listeners:\n", "  - name: "+e1+"\nlisteners:\n", 1)
	if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := inNS(t, px, "check", "--config", path); code != 0 || out != "ok\n" || errs != "" {
		t.Errorf("check with %s configured: exit %d, stdout %q, stderr %q; want 0, \"ok\\n\", nothing", e1, code, out, errs)
	}
}

// TestPreflightLabConfig: configs/lab.yaml is good where it is meant to run,
// in the lab topology's proxy namespace (its p0 renamed to the lab's, as the
// demo does); in a namespace without p0, check names the interface.
func TestPreflightLabConfig(t *testing.T) {
	topo := newTopology(t, 1)
	data, err := os.ReadFile("../../configs/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(data), "- name: p0 ", "- name: "+topo.ProxyIf+" ", 1)
	if cfg == string(data) {
		t.Fatal("configs/lab.yaml has no \"- name: p0 \" line to rename")
	}
	path := writeConfig(t, "lab.yaml", cfg)
	if code, out, errs := inNS(t, topo.Proxy, "check", "--config", path); code != 0 || out != "ok\n" || errs != "" {
		t.Errorf("check configs/lab.yaml in the lab: exit %d, stdout %q, stderr %q; want 0, \"ok\\n\", nothing", code, out, errs)
	}

	// As shipped, in a namespace with nothing but lo.
	empty, err := topo.Proxy.Lab().NS("empty")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := inNS(t, empty, "check", "--config", "../../configs/lab.yaml")
	lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
	want := "../../configs/lab.yaml:5: interfaces[0].name: interface p0 does not exist in this network namespace"
	if code != 1 || out != "" || len(lines) == 0 || lines[0] != want {
		t.Errorf("check configs/lab.yaml without p0: exit %d, stdout %q, stderr:\n%s\nwant exit 1, first line:\n%s", code, out, errs, want)
	}
	t.Logf("check configs/lab.yaml in an empty namespace:\n%s", errs)
}
