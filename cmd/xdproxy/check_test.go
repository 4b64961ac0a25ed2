package main

// `xdproxy check` and `run` over bad configurations: no root, no network.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// goodConfig is a valid configuration touching most blocks. The bad rows
// below are small edits of it.
const goodConfig = `interfaces:
  - name: eth0
    queues: all
    xdp_mode: auto
    zerocopy: auto
listeners:
  - name: web
    address: 10.10.1.1:80
    balance: round_robin
    connect_timeout: 3s
    idle_timeout: 5m
    health_check:
      interval: 2s
      timeout: 1s
      rise: 2
      fall: 3
    backends:
      - address: 10.10.2.2:8080
      - address: 10.10.2.3:8080
        weight: 2
tcp:
  rcv_buffer: 256KiB
  snd_buffer: 256KiB
drain_timeout: 30s
admin:
  address: 127.0.0.1:9100
log:
  level: info
  format: text
`

// badMark marks the line a row's error must name.
const badMark = "# BAD"

// badConfigs each hold exactly one problem, on the line marked badMark,
// in the field named.
var badConfigs = []struct {
	name, field, yaml string
}{
	{"unknown top-level key", "bogus", goodConfig + "bogus: 1 # BAD\n"},
	{"relative state_dir", "state_dir", goodConfig + "state_dir: var/lib/xdproxy # BAD\n"},
	{"unknown listener key", "listeners[0].balanse",
		strings.Replace(goodConfig, "    balance: round_robin\n", "    balanse: round_robin # BAD\n", 1)},
	{"listener port 0", "listeners[0].address",
		strings.Replace(goodConfig, "address: 10.10.1.1:80\n", "address: 10.10.1.1:0 # BAD\n", 1)},
	{"backend port 0", "listeners[0].backends[0].address",
		strings.Replace(goodConfig, "address: 10.10.2.2:8080\n", "address: 10.10.2.2:0 # BAD\n", 1)},
	{"rise 0", "listeners[0].health_check.rise",
		strings.Replace(goodConfig, "rise: 2\n", "rise: 0 # BAD\n", 1)},
	{"listener address not an IP", "listeners[0].address",
		strings.Replace(goodConfig, "address: 10.10.1.1:80\n", "address: localhost:80 # BAD\n", 1)},
	{"duplicate listener names", "listeners[1].name",
		strings.Replace(goodConfig, "tcp:\n", `  - name: web # BAD
    address: 10.10.1.1:81
    backends:
      - address: 10.10.2.2:8081
tcp:
`, 1)},
	{"empty backends", "listeners[0].backends",
		strings.Replace(goodConfig, `    backends:
      - address: 10.10.2.2:8080
      - address: 10.10.2.3:8080
        weight: 2
`, "    backends: [] # BAD\n", 1)},
	{"duration without unit", "listeners[0].connect_timeout",
		strings.Replace(goodConfig, "connect_timeout: 3s\n", "connect_timeout: 3 # BAD\n", 1)},
	{"bad duration", "drain_timeout",
		strings.Replace(goodConfig, "drain_timeout: 30s\n", "drain_timeout: soon # BAD\n", 1)},
	{"bad balance enum", "listeners[0].balance",
		strings.Replace(goodConfig, "balance: round_robin\n", "balance: random # BAD\n", 1)},
	{"bad xdp_mode enum", "interfaces[0].xdp_mode",
		strings.Replace(goodConfig, "xdp_mode: auto\n", "xdp_mode: fast # BAD\n", 1)},
	{"bad log level", "log.level",
		strings.Replace(goodConfig, "level: info\n", "level: verbose # BAD\n", 1)},
	{"weight 0", "listeners[0].backends[1].weight",
		strings.Replace(goodConfig, "weight: 2\n", "weight: 0 # BAD\n", 1)},
	{"buffer too small", "tcp.rcv_buffer",
		strings.Replace(goodConfig, "rcv_buffer: 256KiB\n", "rcv_buffer: 1KiB # BAD\n", 1)},
	{"bad size", "tcp.snd_buffer",
		strings.Replace(goodConfig, "snd_buffer: 256KiB\n", "snd_buffer: lots # BAD\n", 1)},
	{"health timeout above interval", "listeners[0].health_check.timeout",
		strings.Replace(goodConfig, "timeout: 1s\n", "timeout: 5s # BAD\n", 1)},
	{"interface without name", "interfaces[0].name",
		strings.Replace(goodConfig, "  - name: eth0\n    queues: all\n", "  - queues: all # BAD\n", 1)},
	{"empty source port range", "listeners[0].source_ports",
		strings.Replace(goodConfig, "balance: round_robin\n", "balance: round_robin\n    source_ports: 30000-20000 # BAD\n", 1)},
	{"duplicate backend", "listeners[0].backends[1].address",
		strings.Replace(goodConfig, "address: 10.10.2.3:8080\n", "address: 10.10.2.2:8080 # BAD\n", 1)},
	{"bad proxy_protocol", "listeners[0].proxy_protocol",
		strings.Replace(goodConfig, "balance: round_robin\n", "balance: round_robin\n    proxy_protocol: v3 # BAD\n", 1)},
	{"negative max_connections", "listeners[0].max_connections",
		strings.Replace(goodConfig, "balance: round_robin\n", "balance: round_robin\n    max_connections: -1 # BAD\n", 1)},
	{"admin address not host:port", "admin.address",
		strings.Replace(goodConfig, "address: 127.0.0.1:9100\n", "address: nohost # BAD\n", 1)},
	{"admin address not loopback, no token", "admin.address",
		strings.Replace(goodConfig, "address: 127.0.0.1:9100\n", "address: 0.0.0.0:9100 # BAD\n", 1)},
	{"admin token file not absolute", "admin.token_file",
		strings.Replace(goodConfig, "address: 127.0.0.1:9100\n", "address: 127.0.0.1:9100\n  token_file: admin.token # BAD\n", 1)},
}

// badLine is the 1-based number of the line holding badMark.
func badLine(t *testing.T, yaml string) int {
	t.Helper()
	for i, l := range strings.Split(yaml, "\n") {
		if strings.Contains(l, badMark) {
			return i + 1
		}
	}
	t.Fatalf("row has no %q line (the replacement did not apply?):\n%s", badMark, yaml)
	return 0
}

func writeConfig(t *testing.T, name, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runMain calls run with a bound on its duration: `run` must not get as far
// as serving (it would block waiting for a signal).
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &out, &errb) }()
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("xdproxy %s did not return within 10s (is it serving?)", strings.Join(args, " "))
	}
	return code, out.String(), errb.String()
}

// TestCheckGood checks the files alone (--no-preflight): their interfaces
// (eth0, the lab's p0) need not exist where the tests run. Plain check also
// holds the file against the host; TestPreflight* run it in lab namespaces,
// configs/lab.yaml included.
func TestCheckGood(t *testing.T) {
	path := writeConfig(t, "good.yaml", goodConfig)
	code, out, errs := runMain(t, "check", "--no-preflight", "--config", path)
	if code != 0 || out != "ok\n" || errs != "" {
		t.Fatalf("check of a good config: exit %d, stdout %q, stderr %q; want 0, \"ok\\n\", \"\"", code, out, errs)
	}
	// The shipped configs are good too.
	for _, f := range []string{"lab.yaml", "two-armed.yaml", "dual-stack.yaml", "xdproxy.example.yaml"} {
		code, out, errs = runMain(t, "check", "--config", "../../configs/"+f, "--no-preflight")
		if code != 0 || out != "ok\n" {
			t.Errorf("check configs/%s: exit %d, stdout %q, stderr %q", f, code, out, errs)
		}
	}
}

func TestCheckBad(t *testing.T) {
	if len(badConfigs) < 12 {
		t.Fatalf("only %d bad configs", len(badConfigs))
	}
	for _, tc := range badConfigs {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			line := badLine(t, tc.yaml)
			path := writeConfig(t, "bad.yaml", tc.yaml)
			code, out, errs := runMain(t, "check", "--config", path)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
			if len(lines) != 1 || !strings.HasSuffix(errs, "\n") {
				t.Fatalf("stderr is not exactly one line:\n%s", errs)
			}
			want := fmt.Sprintf("%s:%d: %s: ", path, line, tc.field)
			if !strings.HasPrefix(lines[0], want) || len(lines[0]) == len(want) {
				t.Fatalf("stderr %q, want %q followed by what is wrong", lines[0], want)
			}
			t.Logf("%s", strings.TrimPrefix(lines[0], filepath.Dir(path)+"/"))
		})
	}
}

// TestRunBadConfig: `run` refuses a bad config before touching the network.
// The interface does not exist: had run got as far as the data plane it
// would say so (or, as root, block serving); instead it prints the config
// problem, one line, and exits 1.
func TestRunBadConfig(t *testing.T) {
	yaml := strings.Replace(goodConfig, "name: eth0\n", "name: nosuchif0\n", 1)
	yaml = strings.Replace(yaml, "rise: 2\n", "rise: 0 # BAD\n", 1)
	line := badLine(t, yaml)
	path := writeConfig(t, "bad.yaml", yaml)
	before := netState(t)
	code, out, errs := runMain(t, "run", "--config", path)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	want := regexp.MustCompile("^" + regexp.QuoteMeta(fmt.Sprintf("%s:%d: listeners[0].health_check.rise: ", path, line)) + `.+\n$`)
	if !want.MatchString(errs) {
		t.Fatalf("stderr %q, want one line matching %v", errs, want)
	}
	if after := netState(t); after != before {
		t.Errorf("run with a bad config changed the network state:\nbefore %s\nafter  %s", before, after)
	}

	// Usage errors are not config errors.
	if code, _, _ := runMain(t, "run"); code != 2 {
		t.Errorf("run without --config: exit %d, want 2", code)
	}
	if code, _, errs := runMain(t, "run", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 || strings.Count(errs, "\n") != 1 {
		t.Errorf("run with a missing file: exit %d, stderr %q; want 1 and one line", code, errs)
	}
}

// netState is what a run that got past the config would change: the
// reserved ports and the interfaces' XDP attachments.
func netState(t *testing.T) string {
	t.Helper()
	res, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	s := fmt.Sprintf("reserved_ports=%q", strings.TrimSpace(string(res)))
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("listing interfaces: %v", err)
	}
	for _, l := range links {
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			s += fmt.Sprintf(" %s:xdp=%d", l.Attrs().Name, x.ProgId)
		}
	}
	return s
}

func TestVersion(t *testing.T) {
	code, out, _ := runMain(t, "version")
	if code != 0 || !strings.HasPrefix(out, "xdproxy ") {
		t.Fatalf("version: exit %d, stdout %q", code, out)
	}
	if code, _, errs := runMain(t, "frobnicate"); code != 2 || errs == "" {
		t.Fatalf("unknown command: exit %d, stderr %q; want 2 and a message", code, errs)
	}
}
