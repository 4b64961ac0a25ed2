package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, name, src string) *Config {
	t.Helper()
	cfg, err := Parse(name, []byte(src))
	if err != nil {
		t.Fatalf("Parse(%s): unexpected error:\n%v", name, err)
	}
	return cfg
}

func TestExampleAndLabConfigsParse(t *testing.T) {
	for _, path := range []string{"../../configs/xdproxy.example.yaml", "../../configs/lab.yaml"} {
		cfg, err := Load(path)
		if err != nil {
			t.Fatalf("Load(%s):\n%v", path, err)
		}
		if len(cfg.Interfaces) == 0 || len(cfg.Listeners) == 0 {
			t.Fatalf("Load(%s): no interfaces or listeners: %+v", path, cfg)
		}
	}
}

func TestExampleConfigValues(t *testing.T) {
	cfg, err := Load("../../configs/xdproxy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Every value the example shows is the default, except the second backend's weight.
	want := &Config{
		Interfaces: []Interface{{Name: "eth0", XDPMode: "auto", ZeroCopy: "auto", BusyPoll: DefaultBusyPoll}},
		Listeners: []Listener{{
			Name:           "web",
			Address:        netip.MustParseAddrPort("10.10.1.1:80"),
			Balance:        "round_robin",
			Dial:           "xdp",
			SourcePorts:    [2]uint16{20000, 59999},
			ProxyProtocol:  "none",
			ConnectTimeout: 3 * time.Second,
			IdleTimeout:    5 * time.Minute,
			HealthCheck:    &HealthCheck{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3},
			Backends: []Backend{
				{Address: netip.MustParseAddrPort("10.10.2.2:8080"), Weight: 1},
				{Address: netip.MustParseAddrPort("10.10.2.3:8080"), Weight: 2},
			},
		}},
		TCP:           DefaultTCP(),
		DrainTimeout:  30 * time.Second,
		StateDir:      "/var/lib/xdproxy",
		ClientTimeout: time.Minute,
		Admin:         Admin{Address: "127.0.0.1:9100"},
		Log:           Log{Level: "info", Format: "text"},
		BGP: &BGP{ASN: 65001, RouterID: netip.MustParseAddr("10.10.1.1"), WithdrawDelay: DefaultBGPWithdrawDelay,
			Neighbors: []BGPNeighbor{{Address: netip.MustParseAddr("10.10.1.254"), ASN: 65000, HoldTime: 9 * time.Second}},
			Announce:  []BGPAnnounce{{Listener: "web", Communities: []uint32{65000<<16 | 100}, HasMED: true}}},
	}
	cfg.Lines = nil // the example's comments move its lines; TestDefaults checks Lines
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("example config:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestLabConfig(t *testing.T) {
	cfg, err := Load("../../configs/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Interfaces) != 1 || cfg.Interfaces[0].Name != "p0" {
		t.Errorf("interfaces = %+v, want one named p0", cfg.Interfaces)
	}
	if len(cfg.Listeners) != 1 {
		t.Fatalf("listeners = %+v, want one", cfg.Listeners)
	}
	l := cfg.Listeners[0]
	if l.Name != "web" || l.Address != netip.MustParseAddrPort("10.10.1.1:80") {
		t.Errorf("listener = %s %s, want web 10.10.1.1:80", l.Name, l.Address)
	}
	want := []Backend{
		{Address: netip.MustParseAddrPort("10.10.2.2:8080"), Weight: 1},
		{Address: netip.MustParseAddrPort("10.10.2.3:8080"), Weight: 1},
	}
	if !reflect.DeepEqual(l.Backends, want) {
		t.Errorf("backends = %+v, want %+v", l.Backends, want)
	}
	if cfg.Admin.Address != "127.0.0.1:9100" {
		t.Errorf("admin = %q", cfg.Admin.Address)
	}
}

const minimal = `interfaces:
  - name: eth0
listeners:
  - name: web
    address: 10.10.1.1:80
    backends:
      - address: 10.10.2.2:8080
`

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, "min.yaml", minimal)
	want := &Config{
		Interfaces: []Interface{{Name: "eth0", Queues: nil, XDPMode: "auto", ZeroCopy: "auto", BusyPoll: DefaultBusyPoll}},
		Listeners: []Listener{{
			Name:           "web",
			Address:        netip.MustParseAddrPort("10.10.1.1:80"),
			Balance:        "round_robin",
			Dial:           "xdp",
			SourcePorts:    [2]uint16{20000, 59999},
			ProxyProtocol:  "none",
			ConnectTimeout: 3 * time.Second,
			IdleTimeout:    5 * time.Minute,
			MaxConnections: 0,
			HealthCheck:    nil,
			Backends:       []Backend{{Address: netip.MustParseAddrPort("10.10.2.2:8080"), Weight: 1}},
		}},
		TCP: TCP{
			SYNCookies:        "auto",
			SYNBacklog:        4096,
			AcceptBacklog:     4096,
			TimeWait:          60 * time.Second,
			TimeWaitMax:       262144,
			CongestionControl: "cubic",
			MinRTO:            200 * time.Millisecond,
			MaxRetries:        15,
			Keepalive:         Keepalive{Idle: 2 * time.Hour, Interval: 75 * time.Second, Probes: 9},
			NoDelay:           true,
			RcvBuffer:         256 << 10,
			SndBuffer:         256 << 10,
		},
		DrainTimeout:  30 * time.Second,
		StateDir:      "/var/lib/xdproxy",
		ClientTimeout: time.Minute,
		Admin:         Admin{Address: "127.0.0.1:9100"},
		Log:           Log{Level: "info", Format: "text"},
		Lines: map[string]int{
			"interfaces": 2, "interfaces[0].name": 2,
			"listeners": 4, "listeners[0].name": 4, "listeners[0].address": 5,
			"listeners[0].backends": 7, "listeners[0].backends[0].address": 7,
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
	if cfg.Listeners[0].Source.IsValid() {
		t.Errorf("source = %v, want unset", cfg.Listeners[0].Source)
	}
}

// TestLines: Config.Lines holds the line of every field's value, list items
// included, as errors would name them.
func TestLines(t *testing.T) {
	src := `interfaces:
  - name: eth0
  - {name: eth1, queues: [0]}
listeners:
  - name: web
    dial: xdp

    address: 10.10.1.1:80
    backends:
      - address: 10.10.2.2:8080
      - weight: 2
        address: 10.10.2.3:8080
`
	cfg := mustParse(t, "lines.yaml", src)
	for field, want := range map[string]int{
		"interfaces[0].name":               2,
		"interfaces[1].name":               3,
		"interfaces[1].queues":             3,
		"listeners[0].address":             8,
		"listeners[0].dial":                6,
		"listeners[0].backends[0].address": 10,
		"listeners[0].backends[1].address": 12,
		"listeners[0].backends[1].weight":  11,
	} {
		if got := cfg.Line(field); got != want {
			t.Errorf("Line(%q) = %d, want %d", field, got, want)
		}
	}
	if got := cfg.Line("listeners[0].source"); got != 1 {
		t.Errorf("Line of an absent field = %d, want 1", got)
	}
	if got := (&Config{}).Line("interfaces[0].name"); got != 1 {
		t.Errorf("Line on a Config built in code = %d, want 1", got)
	}
}

func TestExplicitValues(t *testing.T) {
	src := `interfaces:
  - {name: eth1, queues: [0, 2, 3], xdp_mode: native, zerocopy: "on"}
  - name: eth2
    queues: all
    xdp_mode: generic
    zerocopy: off
listeners:
  - name: db.v6
    address: "[2001:db8::1]:5432"
    balance: maglev
    source: 2001:db8::2
    source_ports: 30000 - 30999
    proxy_protocol: v2
    connect_timeout: 500ms
    idle_timeout: 1h30m
    max_connections: 10000
    health_check: {}
    backends:
      - {address: "[2001:db8::10]:5432", weight: 3}
  - name: local
    address: 10.0.0.1:443
    dial: kernel
    balance: least_conn
    health_check: {interval: 5s, timeout: 5s, rise: 1, fall: 1}
    backends:
      - address: 127.0.0.1:8443
tcp:
  syn_cookies: always
  syn_backlog: 128
  accept_backlog: 0x100
  time_wait: 30s
  time_wait_max: 1000
  congestion_control: newreno
  min_rto: 1ms
  max_retries: 5
  keepalive: {idle: 10m, interval: 10s, probes: 3}
  nodelay: false
  rcv_buffer: 4096
  snd_buffer: 1 MB
  memory_limit: 64MiB
drain_timeout: 0s
admin:
  address: ":9200"
  token_file: /etc/xdproxy/../xdproxy/admin.token
log: {level: debug, format: json}
`
	cfg := mustParse(t, "explicit.yaml", src)
	wantIfs := []Interface{
		{Name: "eth1", Queues: []int{0, 2, 3}, XDPMode: "native", ZeroCopy: "on", BusyPoll: DefaultBusyPoll},
		{Name: "eth2", XDPMode: "generic", ZeroCopy: "off", BusyPoll: DefaultBusyPoll},
	}
	if !reflect.DeepEqual(cfg.Interfaces, wantIfs) {
		t.Errorf("interfaces = %+v, want %+v", cfg.Interfaces, wantIfs)
	}
	wantLs := []Listener{{
		Name:           "db.v6",
		Address:        netip.MustParseAddrPort("[2001:db8::1]:5432"),
		Balance:        "maglev",
		Dial:           "xdp",
		Source:         netip.MustParseAddr("2001:db8::2"),
		SourcePorts:    [2]uint16{30000, 30999},
		ProxyProtocol:  "v2",
		ConnectTimeout: 500 * time.Millisecond,
		IdleTimeout:    90 * time.Minute,
		MaxConnections: 10000,
		HealthCheck:    &HealthCheck{Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3},
		Backends:       []Backend{{Address: netip.MustParseAddrPort("[2001:db8::10]:5432"), Weight: 3}},
	}, {
		Name:           "local",
		Address:        netip.MustParseAddrPort("10.0.0.1:443"),
		Balance:        "least_conn",
		Dial:           "kernel",
		SourcePorts:    [2]uint16{20000, 59999},
		ProxyProtocol:  "none",
		ConnectTimeout: 3 * time.Second,
		IdleTimeout:    5 * time.Minute,
		HealthCheck:    &HealthCheck{Interval: 5 * time.Second, Timeout: 5 * time.Second, Rise: 1, Fall: 1},
		Backends:       []Backend{{Address: netip.MustParseAddrPort("127.0.0.1:8443"), Weight: 1}},
	}}
	if !reflect.DeepEqual(cfg.Listeners, wantLs) {
		t.Errorf("listeners:\n got %+v\nwant %+v", cfg.Listeners, wantLs)
	}
	wantTCP := TCP{
		SYNCookies: "always", SYNBacklog: 128, AcceptBacklog: 256, TimeWait: 30 * time.Second,
		TimeWaitMax: 1000, CongestionControl: "newreno", MinRTO: time.Millisecond, MaxRetries: 5,
		Keepalive: Keepalive{Idle: 10 * time.Minute, Interval: 10 * time.Second, Probes: 3},
		NoDelay:   false, RcvBuffer: 4096, SndBuffer: 1000000, MemoryLimit: 64 << 20,
	}
	if cfg.TCP != wantTCP {
		t.Errorf("tcp = %+v, want %+v", cfg.TCP, wantTCP)
	}
	if cfg.DrainTimeout != 0 || cfg.Admin != (Admin{":9200", "/etc/xdproxy/admin.token"}) || cfg.Log != (Log{"debug", "json"}) {
		t.Errorf("drain %v admin %+v log %+v", cfg.DrainTimeout, cfg.Admin, cfg.Log)
	}
}

func TestAdminAddress(t *testing.T) {
	for _, tc := range []struct{ tail, want string }{
		{"", DefaultAdminAddress},
		{"admin:\n", DefaultAdminAddress},
		{"admin: {}\n", DefaultAdminAddress},
		{"admin:\n  address: \"\"\n", ""},
		{"admin:\n  address:\n", ""},
		{"admin:\n  address: ~\n", ""},
		{"admin:\n  address: localhost:8080\n", "localhost:8080"},
		{"admin:\n  address: \"[::1]:9100\"\n", "[::1]:9100"},
	} {
		cfg := mustParse(t, "admin.yaml", minimal+tc.tail)
		if cfg.Admin.Address != tc.want {
			t.Errorf("%q: admin address = %q, want %q", tc.tail, cfg.Admin.Address, tc.want)
		}
	}
}

// TestAdminToken: an admin address that is not loopback needs a token
// file; a loopback or disabled one does not.
func TestAdminToken(t *testing.T) {
	for _, tc := range []struct {
		admin, wantErr string
		token          string
	}{
		{"admin:\n  address: 127.0.0.1:9100\n", "", ""},
		{"admin:\n  address: 127.9.9.9:9100\n", "", ""},
		{"admin:\n  address: \"[::1]:9100\"\n", "", ""},
		{"admin:\n  address: localhost:9100\n", "", ""},
		{"admin:\n  address: \"\"\n", "", ""},
		{"admin:\n  address: \"\"\n  token_file: /t\n", "", "/t"},
		{"admin:\n  address: 127.0.0.1:9100\n  token_file: /etc/xdproxy/token\n", "", "/etc/xdproxy/token"},
		{"admin:\n  address: 10.10.1.1:9100\n  token_file: /etc/xdproxy/token\n", "", "/etc/xdproxy/token"},
		{"admin:\n  token_file: ~\n", "", ""},
		{"admin:\n  address: 10.10.1.1:9100\n", "admin.address: 10.10.1.1:9100 is not a loopback address", ""},
		{"admin:\n  address: \":9100\"\n", "admin.address: :9100 is not a loopback address", ""},
		{"admin:\n  address: 0.0.0.0:9100\n", "is not a loopback address", ""},
		{"admin:\n  address: \"[::]:9100\"\n", "is not a loopback address", ""},
		{"admin:\n  address: admin.example:9100\n", "is not a loopback address", ""},
		{"admin:\n  address: 10.10.1.1:9100\n  token_file: \"\"\n", "is not a loopback address", ""},
	} {
		cfg, err := Parse("a.yaml", []byte(minimal+tc.admin))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.admin, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want %q", tc.admin, err, tc.wantErr)
		case err == nil && cfg.Admin.TokenFile != tc.token:
			t.Errorf("%q: token_file %q, want %q", tc.admin, cfg.Admin.TokenFile, tc.token)
		}
	}
}

func TestLoopbackAddress(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9100": true, "127.1.2.3:1": true, "[::1]:9100": true, "localhost:9100": true, "LocalHost:1": true,
		"[::ffff:127.0.0.1]:9100": true,
		"10.0.0.1:9100":           false, ":9100": false, "0.0.0.0:9100": false, "[::]:9100": false,
		"[fd00::1]:9100": false, "admin:9100": false, "127.0.0.1": false, "": false,
	} {
		if got := LoopbackAddress(addr); got != want {
			t.Errorf("LoopbackAddress(%q) = %v", addr, got)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "  s3cret+/=_-token\n", 0o600)
	if tok, err := ReadTokenFile(good); err != nil || tok != "s3cret+/=_-token" {
		t.Fatalf("good token file: %q, %v", tok, err)
	}
	if tok, err := ReadTokenFile(write("ro", "t\n", 0o400)); err != nil || tok != "t" {
		t.Fatalf("0400 token file: %q, %v", tok, err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing"), "cannot read the token file: open " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{dir, "is not a regular file"},
		{write("world", "t", 0o644), "is open to group or others (mode 0644); the token is a secret: chmod 600 "},
		{write("group", "t", 0o640), "(mode 0640)"},
		{write("groupw", "t", 0o620), "(mode 0620)"},
		{write("empty", "", 0o600), "is empty; put a token in it"},
		{write("blank", " \n\t\n", 0o600), "is empty"},
		{write("two", "a b\n", 0o600), "must hold one token: printable ASCII without spaces or line breaks"},
		{write("lines", "a\nb\n", 0o600), "must hold one token"},
		{write("utf8", "tökén", 0o600), "must hold one token"},
		{write("long", strings.Repeat("x", MaxTokenLen+1), 0o600), "holds more than 4096 bytes"},
	} {
		tok, err := ReadTokenFile(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %q, %v; want an error with %q", c.path, tok, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("an error shows the token: %v", err)
		}
	}
}

func TestNullMeansDefault(t *testing.T) {
	src := minimal + "tcp:\n  syn_backlog:\n  nodelay: ~\ndrain_timeout:\nlog:\n"
	cfg := mustParse(t, "null.yaml", strings.Replace(src, "    address: 10.10.1.1:80\n", "    address: 10.10.1.1:80\n    health_check:\n    balance: ~\n", 1))
	if cfg.TCP != DefaultTCP() || cfg.DrainTimeout != DefaultDrainTimeout || cfg.Log.Level != "info" {
		t.Errorf("nulls did not keep defaults: %+v", cfg)
	}
	if l := cfg.Listeners[0]; l.HealthCheck != nil || l.Balance != "round_robin" {
		t.Errorf("listener = %+v", l)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	src := `interfaces:
  - name: eth0
listeners:
  - name: a
    address: 10.10.1.1:80
    health_check: &hc {interval: 3s, timeout: 1s}
    backends: &pool
      - address: 10.10.2.2:8080
      - address: 10.10.2.3:8080
  - name: b
    address: 10.10.1.1:81
    health_check: *hc
    backends: *pool
`
	cfg := mustParse(t, "alias.yaml", src)
	if len(cfg.Listeners[1].Backends) != 2 || cfg.Listeners[1].HealthCheck.Interval != 3*time.Second {
		t.Errorf("aliases not resolved: %+v", cfg.Listeners[1])
	}
}

// base is the valid file the bad-config rows mutate. Line numbers:
//
//	1 interfaces:
//	2   - name: eth0
//	3     queues: all
//	4 listeners:
//	5   - name: web
//	6     address: 10.10.1.1:80
//	7     backends:
//	8       - address: 10.10.2.2:8080
//	9         weight: 1
//	10 tcp:
//	11   rcv_buffer: 256KiB
//	12 log:
//	13   level: info
const base = `interfaces:
  - name: eth0
    queues: all
listeners:
  - name: web
    address: 10.10.1.1:80
    backends:
      - address: 10.10.2.2:8080
        weight: 1
tcp:
  rcv_buffer: 256KiB
log:
  level: info
`

func TestBaseIsValid(t *testing.T) { mustParse(t, "t.yaml", base) }

func TestBadConfigs(t *testing.T) {
	const (
		listener5 = "    address: 10.10.1.1:80\n" // line 6
		backends  = "    backends:\n"             // line 7
		hc        = "    health_check:\n"         // inserted as line 7 (backends moves to 8)
		second    = "tcp:\n"                      // insert a second listener before line 10
	)
	for _, tc := range []struct {
		name     string
		old, new string // replace old (which must occur in base) with new; old "" replaces the whole file
		want     string
	}{
		// Unknown keys, with their own line.
		{"unknown root key", "log:\n", "logs:\n",
			"t.yaml:12: logs: unknown field; did you mean log?"},
		{"unknown listener key", backends, "    helth_check: {}\n" + backends,
			"t.yaml:7: listeners[0].helth_check: unknown field; did you mean health_check?"},
		{"unknown backend key", "        weight: 1\n", "        wieght: 1\n",
			"t.yaml:9: listeners[0].backends[0].wieght: unknown field; did you mean weight?"},
		{"unknown key, no near match", "  level: info\n", "  colour: red\n",
			"t.yaml:13: log.colour: unknown field; expected one of: level, format"},
		{"duplicate key", listener5, listener5 + "    name: api\n",
			"t.yaml:7: listeners[0].name: duplicate key (first at line 5)"},
		{"merge key", backends, "    <<: {balance: maglev}\n" + backends,
			"t.yaml:7: listeners[0]: merge keys (<<) are not supported"},

		// Addresses.
		{"listener port 0", "10.10.1.1:80", "10.10.1.1:0",
			"t.yaml:6: listeners[0].address: port must be between 1 and 65535 (got 0)"},
		{"listener host name", "10.10.1.1:80", "web.example.com:80",
			`t.yaml:6: listeners[0].address: "web.example.com:80" is not IP:port (IPv4:port or [IPv6]:port; host names are not allowed)`},
		{"listener without port", "10.10.1.1:80", "10.10.1.1",
			`t.yaml:6: listeners[0].address: "10.10.1.1" is not IP:port (IPv4:port or [IPv6]:port; host names are not allowed)`},
		{"listener unspecified", "10.10.1.1:80", "0.0.0.0:80",
			"t.yaml:6: listeners[0].address: 0.0.0.0 is the unspecified address; give the address of one host"},
		{"backend multicast", "10.10.2.2:8080", "224.0.0.1:8080",
			"t.yaml:8: listeners[0].backends[0].address: 224.0.0.1 is not a unicast address"},
		{"backend is the listener", "10.10.2.2:8080", "10.10.1.1:80",
			"t.yaml:8: listeners[0].backends[0].address: backend 10.10.1.1:80 is the listener's own address"},
		{"duplicate backend", "        weight: 1\n", "        weight: 1\n      - address: 10.10.2.2:8080\n",
			"t.yaml:10: listeners[0].backends[1].address: duplicate backend 10.10.2.2:8080 (first at line 8)"},
		{"backend as a plain string", "      - address: 10.10.2.2:8080\n        weight: 1\n", "      - 10.10.2.2:8080\n",
			`t.yaml:8: listeners[0].backends[0]: expected a mapping like {address: IP:port}, got "10.10.2.2:8080"`},
		{"source not an IP", listener5, listener5 + "    source: gateway\n",
			`t.yaml:7: listeners[0].source: "gateway" is not an IP address`},
		{"source with dial kernel", listener5, listener5 + "    dial: kernel\n    source: 10.10.2.1\n",
			"t.yaml:8: listeners[0].source: source applies to dial: xdp only"},
		{"source family differs", listener5, listener5 + "    source: 2001:db8::1\n",
			"t.yaml:9: listeners[0].backends[0].address: address family differs from the listener's source 2001:db8::1"},

		// Ranges and numbers.
		{"health check rise 0", backends, hc + "      rise: 0\n" + backends,
			"t.yaml:8: listeners[0].health_check.rise: must be at least 1 (got 0)"},
		{"health check fall 0", backends, hc + "      fall: 0\n" + backends,
			"t.yaml:8: listeners[0].health_check.fall: must be at least 1 (got 0)"},
		{"health check timeout above interval", backends, hc + "      interval: 2s\n      timeout: 3s\n" + backends,
			"t.yaml:9: listeners[0].health_check.timeout: must not exceed interval (2s)"},
		{"health check interval below default timeout", backends, hc + "      interval: 500ms\n" + backends,
			"t.yaml:8: listeners[0].health_check.interval: must not be shorter than timeout (1s)"},
		{"health check interval 0", backends, hc + "      interval: 0s\n" + backends,
			"t.yaml:8: listeners[0].health_check.interval: must be greater than 0 (got 0s)"},
		{"health check not a mapping", backends, "    health_check: yes\n" + backends,
			`t.yaml:7: listeners[0].health_check: expected a mapping, got "yes"`},
		{"duration without unit", listener5, listener5 + "    connect_timeout: 30\n",
			`t.yaml:7: listeners[0].connect_timeout: duration "30" needs a unit, as in 30s or 30ms`},
		{"duration in words", listener5, listener5 + "    idle_timeout: 5 minutes\n",
			`t.yaml:7: listeners[0].idle_timeout: invalid duration "5 minutes"; use Go syntax like 500ms, 2s, 5m, 1h`},
		{"negative drain timeout", "log:\n", "drain_timeout: -1s\nlog:\n",
			"t.yaml:12: drain_timeout: must not be negative (got -1s)"},
		{"min_rto 0", "  rcv_buffer: 256KiB\n", "  min_rto: 0s\n",
			"t.yaml:11: tcp.min_rto: must be between 1ms and 2m (got 0s)"},
		{"max_retries 0", "  rcv_buffer: 256KiB\n", "  max_retries: 0\n",
			"t.yaml:11: tcp.max_retries: must be between 1 and 255 (got 0)"},
		{"keepalive probes 0", "  rcv_buffer: 256KiB\n", "  keepalive: {idle: 1h, probes: 0}\n",
			"t.yaml:11: tcp.keepalive.probes: must be between 1 and 255 (got 0)"},
		{"max_connections negative", listener5, listener5 + "    max_connections: -1\n",
			"t.yaml:7: listeners[0].max_connections: must be at least 0 (got -1)"},
		{"max_connections not a number", listener5, listener5 + "    max_connections: many\n",
			`t.yaml:7: listeners[0].max_connections: expected an integer, got "many"`},
		{"weight 0", "weight: 1", "weight: 0",
			"t.yaml:9: listeners[0].backends[0].weight: must be between 1 and 65535 (got 0)"},
		{"weight fraction", "weight: 1", "weight: 1.5",
			`t.yaml:9: listeners[0].backends[0].weight: expected an integer, got "1.5"`},
		{"source ports reversed", listener5, listener5 + "    source_ports: 50000-40000\n",
			"t.yaml:7: listeners[0].source_ports: range 50000-40000 is empty: 50000 is above 40000"},
		{"source ports from 0", listener5, listener5 + "    source_ports: 0-100\n",
			"t.yaml:7: listeners[0].source_ports: ports must be between 1 and 65535 (got 0-100)"},
		{"source ports single", listener5, listener5 + "    source_ports: 20000\n",
			`t.yaml:7: listeners[0].source_ports: expected a port range LO-HI like 20000-59999, got "20000"`},
		{"source ports with dial kernel", listener5, listener5 + "    dial: kernel\n    source_ports: 1-2\n",
			"t.yaml:8: listeners[0].source_ports: source_ports applies to dial: xdp only"},
		{"rcv_buffer too small", "256KiB", "1KiB",
			"t.yaml:11: tcp.rcv_buffer: must be between 4KiB and 1GiB (got 1KiB)"},
		{"rcv_buffer too large", "256KiB", "2GiB",
			"t.yaml:11: tcp.rcv_buffer: must be between 4KiB and 1GiB (got 2GiB)"},
		{"rcv_buffer bad unit", "256KiB", "256kb",
			`t.yaml:11: tcp.rcv_buffer: invalid size "256kb"; use bytes (4096) or a unit: KiB, MiB, GiB, KB, MB, GB`},
		{"memory_limit too small", "  rcv_buffer: 256KiB\n", "  memory_limit: 1MiB\n",
			"t.yaml:11: tcp.memory_limit: must be between 8MiB and 1024GiB (got 1MiB)"},
		{"memory_limit a word", "  rcv_buffer: 256KiB\n", "  memory_limit: lots\n",
			`t.yaml:11: tcp.memory_limit: invalid size "lots"; use bytes (4096) or a unit: KiB, MiB, GiB, KB, MB, GB`},
		{"nodelay not a bool", "  rcv_buffer: 256KiB\n", "  nodelay: yes\n",
			`t.yaml:11: tcp.nodelay: expected true or false, got "yes"`},

		// Enums.
		{"balance", listener5, listener5 + "    balance: random\n",
			`t.yaml:7: listeners[0].balance: invalid value "random"; expected one of: round_robin, least_conn, maglev`},
		{"dial", listener5, listener5 + "    dial: tcp\n",
			`t.yaml:7: listeners[0].dial: invalid value "tcp"; expected one of: xdp, kernel`},
		{"proxy_protocol", listener5, listener5 + "    proxy_protocol: v3\n",
			`t.yaml:7: listeners[0].proxy_protocol: invalid value "v3"; expected one of: none, v1, v2`},
		{"xdp_mode", "    queues: all\n", "    xdp_mode: fast\n",
			`t.yaml:3: interfaces[0].xdp_mode: invalid value "fast"; expected one of: auto, native, generic`},
		{"zerocopy as bool", "    queues: all\n", "    zerocopy: true\n",
			`t.yaml:3: interfaces[0].zerocopy: invalid value "true"; expected one of: auto, on, off`},
		{"zerocopy with generic", "    queues: all\n", "    xdp_mode: generic\n    zerocopy: on\n",
			"t.yaml:4: interfaces[0].zerocopy: zero-copy needs native XDP; xdp_mode is generic"},
		{"syn_cookies", "  rcv_buffer: 256KiB\n", "  syn_cookies: sometimes\n",
			`t.yaml:11: tcp.syn_cookies: invalid value "sometimes"; expected one of: auto, always, never`},
		{"congestion_control", "  rcv_buffer: 256KiB\n", "  congestion_control: vegas\n",
			`t.yaml:11: tcp.congestion_control: invalid value "vegas"; expected one of: cubic, newreno, bbr`},
		{"log level", "level: info", "level: verbose",
			`t.yaml:13: log.level: invalid value "verbose"; expected one of: debug, info, warn, error`},
		{"log format", "level: info", "format: xml",
			`t.yaml:13: log.format: invalid value "xml"; expected one of: text, json`},
		{"enum given a list", "level: info", "level: [info]",
			`t.yaml:13: log.level: expected one of: debug, info, warn, error, got a list`},

		// Interfaces and queues.
		{"queue id negative", "queues: all", "queues: [0, -1]",
			"t.yaml:3: interfaces[0].queues[1]: queue id must not be negative (got -1)"},
		{"queue id repeated", "queues: all", "queues: [1, 1]",
			"t.yaml:3: interfaces[0].queues[1]: duplicate queue id 1"},
		{"queues word", "queues: all", "queues: some",
			`t.yaml:3: interfaces[0].queues: expected "all" or a list of queue ids, got "some"`},
		{"queues empty list", "queues: all", "queues: []",
			`t.yaml:3: interfaces[0].queues: the list is empty; use "all" or list queue ids`},
		{"interface name missing", "  - name: eth0\n    queues: all\n", "  - queues: all\n",
			"t.yaml:2: interfaces[0].name: required field is missing"},
		{"interface name too long", "name: eth0", "name: averyveryverylongname0",
			`t.yaml:2: interfaces[0].name: invalid interface name "averyveryverylongname0": 1 to 15 characters, no '/', ':' or spaces`},
		{"duplicate interface", "    queues: all\n", "    queues: all\n  - name: eth0\n",
			`t.yaml:4: interfaces[1].name: duplicate interface name "eth0" (first at line 2)`},
		{"no interfaces", "interfaces:\n  - name: eth0\n    queues: all\n", "interfaces: []\n",
			"t.yaml:1: interfaces: at least one interface is required"},
		{"interfaces missing", "interfaces:\n  - name: eth0\n    queues: all\n", "",
			"t.yaml:1: interfaces: at least one interface is required"},

		// Listeners.
		{"listener name missing", "  - name: web\n    address", "  - address",
			"t.yaml:5: listeners[0].name: required field is missing"},
		{"listener name empty", "name: web", `name: ""`,
			`t.yaml:5: listeners[0].name: invalid name "": 1 to 64 letters, digits, '-', '_' or '.'`},
		{"listener name with a space", "name: web", "name: my web",
			`t.yaml:5: listeners[0].name: invalid name "my web": 1 to 64 letters, digits, '-', '_' or '.'`},
		{"listener address missing", listener5, "",
			"t.yaml:5: listeners[0].address: required field is missing"},
		{"listener address empty", listener5, "    address:\n",
			"t.yaml:6: listeners[0].address: required field is missing"},
		{"duplicate listener name", second, "  - name: web\n    address: 10.10.1.2:80\n    backends: [{address: 10.10.2.2:8080}]\n" + second,
			`t.yaml:10: listeners[1].name: duplicate listener name "web" (first at line 5)`},
		{"duplicate listener address", second, "  - name: api\n    address: 10.10.1.1:80\n    backends: [{address: 10.10.2.2:8080}]\n" + second,
			"t.yaml:11: listeners[1].address: duplicate listener address 10.10.1.1:80 (first at line 6)"},
		{"empty backends", "    backends:\n      - address: 10.10.2.2:8080\n        weight: 1\n", "    backends: []\n",
			"t.yaml:7: listeners[0].backends: at least one backend is required"},
		{"backends missing", "    backends:\n      - address: 10.10.2.2:8080\n        weight: 1\n", "",
			"t.yaml:5: listeners[0].backends: at least one backend is required"},
		{"backend address missing", "      - address: 10.10.2.2:8080\n        weight: 1\n", "      - weight: 1\n",
			"t.yaml:8: listeners[0].backends[0].address: required field is missing"},
		{"listeners not a list", "listeners:\n  - name: web\n    address: 10.10.1.1:80\n    backends:\n      - address: 10.10.2.2:8080\n        weight: 1\n", "listeners: web\n",
			`t.yaml:4: listeners: expected a list, got "web"`},
		{"listener not a mapping", "listeners:\n  - name: web\n    address: 10.10.1.1:80\n    backends:\n      - address: 10.10.2.2:8080\n        weight: 1\n", "listeners:\n  - web\n",
			`t.yaml:5: listeners[0]: expected a mapping, got "web"`},
		{"no listeners", "listeners:\n  - name: web\n    address: 10.10.1.1:80\n    backends:\n      - address: 10.10.2.2:8080\n        weight: 1\n", "listeners:\n",
			"t.yaml:4: listeners: at least one listener is required"},

		// Admin.
		{"admin address without port", "log:\n", "admin:\n  address: localhost\nlog:\n",
			`t.yaml:13: admin.address: "localhost" is not host:port (like 127.0.0.1:9100); use "" to disable the admin server`},
		{"admin port 0", "log:\n", "admin:\n  address: 127.0.0.1:0\nlog:\n",
			`t.yaml:13: admin.address: port must be between 1 and 65535 (got "0")`},
		{"admin not loopback without a token", "log:\n", "admin:\n  address: 10.0.0.1:9100\nlog:\n",
			`t.yaml:13: admin.address: 10.0.0.1:9100 is not a loopback address, so the admin server needs a bearer token: set admin.token_file (a file holding the token, mode 0600), or listen on 127.0.0.1`},
		{"admin token file relative", "log:\n", "admin:\n  token_file: admin.token\nlog:\n",
			`t.yaml:13: admin.token_file: "admin.token" is not an absolute path`},
		{"admin token file a list", "log:\n", "admin:\n  token_file: [a]\nlog:\n",
			`t.yaml:13: admin.token_file: expected a file path, got a list`},

		// The document as a whole.
		{"not a mapping", "", "- interfaces\n- listeners\n",
			"t.yaml:1: the configuration must be a mapping (interfaces:, listeners:, ...), got a list"},
		{"scalar document", "", "hello\n",
			`t.yaml:1: the configuration must be a mapping (interfaces:, listeners:, ...), got "hello"`},
		{"tab indentation", "  level: info\n", "\tlevel: info\n",
			"t.yaml:13: invalid YAML: found character that cannot start any token"},
		{"unclosed flow list", "queues: all", "queues: [0, 1",
			"t.yaml:3: invalid YAML: did not find expected ',' or ']'"},
		{"list item where a key belongs", "  - name: web\n", "  - name: web\n - x\n",
			"t.yaml:6: invalid YAML: did not find expected key"},
		{"unclosed quote", "name: web", "name: 'web",
			"t.yaml:5: invalid YAML: found unexpected end of stream"},
		{"unquoted IPv6 listener", "10.10.1.1:80", "[2001:db8::1]:443",
			`t.yaml:6: quote IPv6 addresses: address: "[2001:db8::1]:443"`},
		{"IPv6 without port", "10.10.2.2:8080", "[2001:db8::1]",
			`t.yaml:8: listeners[0].backends[0].address: expected an address IP:port, got a list (quote IPv6 addresses: "[2001:db8::1]:80")`},
		{"unknown anchor", "weight: 1", "weight: *w",
			"t.yaml:9: invalid YAML: unknown anchor 'w' referenced"},
		{"second document", "log:\n", "---\nlog:\n",
			"t.yaml:12: a second YAML document starts here; the file must hold exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.new
			if tc.old != "" {
				if !strings.Contains(base, tc.old) {
					t.Fatalf("base does not contain %q", tc.old)
				}
				src = strings.Replace(base, tc.old, tc.new, 1)
			}
			_, err := Parse("t.yaml", []byte(src))
			if err == nil {
				t.Fatalf("no error; want %s\nsource:\n%s", tc.want, src)
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s\nsource:\n%s", got, tc.want, src)
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	src := `interfaces:
  - name: eth0
    queues: [-1]
listeners:
  - name: web
    address: 10.10.1.1:0
    balance: random
    health_check: {rise: 0, fall: 0}
    backends: []
  - name: web
    adress: 10.10.1.2:80
    backends:
      - address: 10.10.2.2:8080
        weight: 0
tcp:
  rcv_buffer: 1GB
  snd_buffer: 2GiB
log:
  level: loud
`
	_, err := Parse("multi.yaml", []byte(src))
	want := strings.Join([]string{
		"multi.yaml:3: interfaces[0].queues[0]: queue id must not be negative (got -1)",
		"multi.yaml:6: listeners[0].address: port must be between 1 and 65535 (got 0)",
		`multi.yaml:7: listeners[0].balance: invalid value "random"; expected one of: round_robin, least_conn, maglev`,
		"multi.yaml:8: listeners[0].health_check.rise: must be at least 1 (got 0)",
		"multi.yaml:8: listeners[0].health_check.fall: must be at least 1 (got 0)",
		"multi.yaml:9: listeners[0].backends: at least one backend is required",
		`multi.yaml:10: listeners[1].name: duplicate listener name "web" (first at line 5)`,
		"multi.yaml:10: listeners[1].address: required field is missing",
		"multi.yaml:11: listeners[1].adress: unknown field; did you mean address?",
		"multi.yaml:14: listeners[1].backends[0].weight: must be between 1 and 65535 (got 0)",
		"multi.yaml:17: tcp.snd_buffer: must be between 4KiB and 1GiB (got 2GiB)",
		`multi.yaml:19: log.level: invalid value "loud"; expected one of: debug, info, warn, error`,
	}, "\n")
	if err == nil {
		t.Fatal("no error")
	}
	if got := err.Error(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	var errs *Errors
	if !errors.As(err, &errs) || len(*errs) != 12 {
		t.Fatalf("errors.As: %T %v", err, err)
	}
	e := (*errs)[3]
	if e.File != "multi.yaml" || e.Line != 8 || e.Field != "listeners[0].health_check.rise" || e.Msg != "must be at least 1 (got 0)" {
		t.Errorf("entry 3 = %+v", e)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "~\n"} {
		_, err := Parse("empty.yaml", []byte(src))
		want := "empty.yaml:1: interfaces: at least one interface is required\n" +
			"empty.yaml:1: listeners: at least one listener is required"
		if err == nil || err.Error() != want {
			t.Errorf("%q: got %v, want\n%s", src, err, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if err == nil {
		t.Fatal("no error")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %q does not name the path and the reason", err)
	}
	var errs *Errors
	if errors.As(err, &errs) {
		t.Errorf("a missing file is not a *Errors")
	}
}

func TestLoadNamesFileInErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(base, "weight: 1", "weight: -2", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + ":9: listeners[0].backends[0].weight: must be between 1 and 65535 (got -2)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range files {
		_, err := Load(path)
		wantFile := strings.TrimSuffix(path, ".yaml") + ".errors"
		want, rerr := os.ReadFile(wantFile)
		if rerr != nil {
			// A file without .errors must be valid.
			if err != nil {
				t.Errorf("%s: %v", path, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error, want\n%s", path, want)
			continue
		}
		if got := err.Error() + "\n"; got != string(want) {
			t.Errorf("%s:\n got:\n%s\nwant:\n%s", path, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true},
		{"4096B", 4096, true},
		{"256KiB", 256 << 10, true},
		{"1 MiB", 1 << 20, true},
		{"1GiB", 1 << 30, true},
		{"64KB", 64000, true},
		{"2MB", 2000000, true},
		{"1GB", 1000000000, true},
		{"", 0, false},
		{"KiB", 0, false},
		{"1.5MiB", 0, false},
		{"-4096", 0, false},
		{"4kib", 0, false},
		{"4 K", 0, false},
		{"99999999999999999999", 0, false},
		{"9999999999999GiB", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for n, want := range map[int64]string{4096: "4KiB", 1 << 30: "1GiB", 1536 << 10: "1536KiB", 4097: "4097", 0: "0"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSummary(t *testing.T) {
	cfg, err := Load("../../configs/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := "interfaces: p0 (all queues, xdp auto, zerocopy auto)\n" +
		"listener web 10.10.1.1:80 -> 2 backends (round_robin, dial xdp, health check every 2s)\n" +
		"admin 127.0.0.1:9100, log info/text, drain 10s"
	if got := cfg.Summary(); got != want {
		t.Errorf("Summary:\n%s\nwant:\n%s", got, want)
	}
	cfg = mustParse(t, "min.yaml", strings.Replace(minimal, "  - name: eth0\n", "  - name: eth0\n    queues: [0, 1]\n", 1)+"admin: {address: \"\"}\n")
	want = "interfaces: eth0 (queues 0,1, xdp auto, zerocopy auto)\n" +
		"listener web 10.10.1.1:80 -> 1 backend (round_robin, dial xdp, no health check)\n" +
		"admin disabled, log info/text, drain 30s"
	if got := cfg.Summary(); got != want {
		t.Errorf("Summary:\n%s\nwant:\n%s", got, want)
	}
}

// FuzzParse checks that Parse never panics and that every problem has a
// line and a message.
func FuzzParse(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte(minimal))
	f.Add([]byte("listeners: &a [*a]\n"))
	f.Add([]byte("a: b: c\n"))
	f.Add([]byte("interfaces: {}\nlisteners: [[]]\ntcp: []\n"))
	if data, err := os.ReadFile("../../configs/xdproxy.example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err == nil {
			if cfg == nil || len(cfg.Interfaces) == 0 || len(cfg.Listeners) == 0 {
				t.Fatalf("valid config without interfaces or listeners: %+v", cfg)
			}
			_ = cfg.Summary()
			return
		}
		var errs *Errors
		if !errors.As(err, &errs) || len(*errs) == 0 {
			t.Fatalf("error %T %v is not a non-empty *Errors", err, err)
		}
		for _, e := range *errs {
			if e.Line < 1 || e.Msg == "" || e.File != "f.yaml" {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}
