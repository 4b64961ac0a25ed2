package preflight

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/xdproxy/xdproxy/internal/config"
)

// fakeSystem is a host made of links and a routing table of prefixes.
type fakeSystem struct {
	links       []Link
	routes      []fakeRoute // longest prefix wins
	v6off       map[string]bool
	linkErr     error
	badStateDir bool
	badToken    bool
}

type fakeRoute struct {
	dst   netip.Prefix
	dev   string
	gw    netip.Addr
	src   netip.Addr
	local bool
}

func (f *fakeSystem) Links() ([]Link, error) { return f.links, f.linkErr }

func (f *fakeSystem) RouteGet(dst netip.Addr) (Route, error) {
	best := -1
	for i, r := range f.routes {
		if r.dst.Contains(dst) && (best < 0 || r.dst.Bits() > f.routes[best].dst.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return Route{}, syscall.ENETUNREACH
	}
	r := f.routes[best]
	text := r.dst.String()
	if r.local {
		text = "local " + dst.String()
	}
	if r.gw.IsValid() {
		text += " via " + r.gw.String()
	}
	text += " dev " + r.dev
	if r.src.IsValid() {
		text += " src " + r.src.String()
	}
	return Route{Dev: r.dev, Gateway: r.gw, Src: r.src, Local: r.local, Text: text}, nil
}

func (f *fakeSystem) IPv6Disabled(ifname string) (bool, error) { return f.v6off[ifname], nil }
func (f *fakeSystem) StateDir(dir string) error {
	if f.badStateDir {
		return fmt.Errorf("%s is not writable by this user", dir)
	}
	return nil
}

func (f *fakeSystem) TokenFile(path string) error {
	if f.badToken {
		return fmt.Errorf("%s is open to group or others (mode 0644)", path)
	}
	return nil
}

var mac = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// goodHost: eth0 (clients, 10.0.1.0/24, a default route through it) and
// eth1 (backends, 10.0.2.0/24 and fd00:2::/64) configured; eth2 (10.0.3.0/24,
// fd00:3::/64) is not; lo carries a VIP; dummy0 another.
func goodHost() *fakeSystem {
	return &fakeSystem{
		links: []Link{
			{Name: "lo", Up: true, Type: "loopback", MAC: make(net.HardwareAddr, 6), Addrs: pfx("127.0.0.1/8", "::1/128", "10.9.9.9/32")},
			{Name: "eth0", Up: true, Type: "ether", MAC: mac, Addrs: pfx("10.0.1.1/24", "fd00:1::1/64", "fe80::1/64")},
			{Name: "eth1", Up: true, Type: "ether", MAC: mac, Addrs: pfx("10.0.2.1/24", "fd00:2::1/64", "fe80::2/64")},
			{Name: "eth2", Up: true, Type: "ether", MAC: mac, Addrs: pfx("10.0.3.1/24", "fd00:3::1/64", "fe80::3/64")},
			{Name: "dummy0", Up: true, NoARP: true, Type: "ether", MAC: mac, Addrs: pfx("10.8.8.8/32")},
		},
		routes: []fakeRoute{
			{dst: netip.MustParsePrefix("0.0.0.0/0"), dev: "eth0", gw: netip.MustParseAddr("10.0.1.254")},
			{dst: netip.MustParsePrefix("10.0.1.0/24"), dev: "eth0", src: netip.MustParseAddr("10.0.1.1")},
			{dst: netip.MustParsePrefix("10.0.2.0/24"), dev: "eth1", src: netip.MustParseAddr("10.0.2.1")},
			{dst: netip.MustParsePrefix("10.0.3.0/24"), dev: "eth2", src: netip.MustParseAddr("10.0.3.1")},
			{dst: netip.MustParsePrefix("fd00:1::/64"), dev: "eth0"},
			{dst: netip.MustParsePrefix("fd00:2::/64"), dev: "eth1"},
			{dst: netip.MustParsePrefix("fd00:3::/64"), dev: "eth2"},
			{dst: netip.MustParsePrefix("127.0.0.0/8"), dev: "lo", local: true},
			{dst: netip.MustParsePrefix("10.0.1.1/32"), dev: "lo", local: true},
		},
		v6off: map[string]bool{},
	}
}

// goodYAML passes every rule on goodHost. Listeners: a VIP on lo, one on
// dummy0, one not assigned anywhere, the address of eth0 itself, IPv6, and
// dial: kernel to the host's own loopback and to eth2's network.
const goodYAML = `interfaces:
  - name: eth0
  - name: eth1
listeners:
  - name: vip
    address: 10.9.9.9:80
    backends:
      - address: 10.0.2.2:8080
      - address: 10.0.1.7:8080
      - address: 192.0.2.10:8080
  - name: dummy
    address: 10.8.8.8:80
    backends:
      - address: 10.0.2.2:8080
  - name: own
    address: 10.0.1.1:80
    backends:
      - address: "[fd00:2::2]:8080"
  - name: unassigned
    address: 10.0.1.50:80
    backends:
      - address: 10.0.2.3:8080
  - name: v6
    address: "[fd00:1::50]:80"
    backends:
      - address: "[fd00:2::2]:8080"
  - name: local
    address: 10.0.1.1:81
    dial: kernel
    backends:
      - address: 127.0.0.1:8080
      - address: 10.0.3.2:8080
`

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("x.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("the test's config is invalid:\n%v", err)
	}
	return cfg
}

func check(t *testing.T, yaml string, sys System) []string {
	t.Helper()
	err := Check("x.yaml", parse(t, yaml), sys)
	if err == nil {
		return nil
	}
	var errs *config.Errors
	if !errors.As(err, &errs) || len(*errs) == 0 {
		t.Fatalf("Check: %v (%T); want nil or a non-empty *config.Errors", err, err)
	}
	var out []string
	for _, e := range *errs {
		out = append(out, e.Error())
	}
	if strings.Join(out, "\n") != err.Error() {
		t.Fatalf("Error() is not the problems one per line:\n%s", err)
	}
	return out
}

func TestGoodConfig(t *testing.T) {
	if got := check(t, goodYAML, goodHost()); len(got) != 0 {
		t.Fatalf("problems in a good deployment:\n%s", strings.Join(got, "\n"))
	}
}

// TestRules: each case is an edit of goodYAML or goodHost with exactly the
// problem lines listed.
func TestRules(t *testing.T) {
	cases := []struct {
		name string
		yaml func(string) string
		host func(*fakeSystem)
		want []string
	}{
		{
			name: "state_dir not writable",
			yaml: func(s string) string { return s + "state_dir: /srv/xdproxy\n" },
			host: func(h *fakeSystem) { h.badStateDir = true },
			want: []string{"x.yaml:" + strconv.Itoa(strings.Count(goodYAML, "\n")+1) + ": state_dir: /srv/xdproxy is not writable by this user"},
		},
		{
			name: "admin token file open to others",
			yaml: func(s string) string {
				return s + "admin:\n  address: 10.0.1.1:9100\n  token_file: /etc/xdproxy/token\n"
			},
			host: func(h *fakeSystem) { h.badToken = true },
			want: []string{"x.yaml:" + strconv.Itoa(strings.Count(goodYAML, "\n")+3) + ": admin.token_file: /etc/xdproxy/token is open to group or others (mode 0644)"},
		},
		{
			name: "admin token file not read when the admin server is off",
			yaml: func(s string) string { return s + "admin:\n  address: \"\"\n  token_file: /etc/xdproxy/token\n" },
			host: func(h *fakeSystem) { h.badToken = true },
		},
		{
			name: "backend routed via an unconfigured interface",
			yaml: func(s string) string {
				return strings.Replace(s, "      - address: 10.0.1.7:8080\n", "      - address: 10.0.3.2:80\n", 1)
			},
			want: []string{"x.yaml:9: listeners[0].backends[1].address: 10.0.3.2:80 is routed via eth2 (10.0.3.0/24 dev eth2 src 10.0.3.1), not through a configured interface (eth0, eth1); add eth2 under interfaces: or use dial: kernel"},
		},
		{
			name: "IPv6 backend routed via an unconfigured interface",
			yaml: func(s string) string {
				return strings.Replace(s, `"[fd00:2::2]:8080"`, `"[fd00:3::2]:8080"`, 1)
			},
			want: []string{"x.yaml:18: listeners[2].backends[0].address: [fd00:3::2]:8080 is routed via eth2 (fd00:3::/64 dev eth2), not through a configured interface (eth0, eth1); add eth2 under interfaces: or use dial: kernel"},
		},
		{
			name: "default route via an unconfigured interface",
			host: func(h *fakeSystem) {
				h.routes[0] = fakeRoute{dst: netip.MustParsePrefix("0.0.0.0/0"), dev: "eth2", gw: netip.MustParseAddr("10.0.3.254")}
			},
			want: []string{"x.yaml:10: listeners[0].backends[2].address: 192.0.2.10:8080 is routed via eth2 (0.0.0.0/0 via 10.0.3.254 dev eth2), not through a configured interface (eth0, eth1); add eth2 under interfaces: or use dial: kernel"},
		},
		{
			name: "backend without a route",
			host: func(h *fakeSystem) { h.routes = h.routes[1:] },
			want: []string{"x.yaml:10: listeners[0].backends[2].address: 192.0.2.10:8080 has no route in the kernel (ip route get 192.0.2.10: network is unreachable); add a route to it through a configured interface (eth0, eth1)"},
		},
		{
			name: "backend on this host with dial: xdp",
			yaml: func(s string) string {
				return strings.Replace(s, "      - address: 10.0.1.7:8080\n", "      - address: 127.0.0.1:8080\n", 1)
			},
			want: []string{"x.yaml:9: listeners[0].backends[1].address: 127.0.0.1:8080 is an address of this host (local 127.0.0.1 dev lo); dial: xdp cannot reach this host's own sockets; use dial: kernel"},
		},
		{
			name: "dial: kernel is exempt from routes",
			host: func(h *fakeSystem) { h.routes = h.routes[7:] },
			yaml: func(s string) string {
				s = strings.Replace(s, "    backends:\n", "    dial: kernel\n    backends:\n", 5)
				return s
			},
		},
		{
			name: "IPv4 backend, no IPv4 address on the routed interface",
			host: func(h *fakeSystem) { h.links[2].Addrs = pfx("fd00:2::1/64") },
			want: []string{
				"x.yaml:8: listeners[0].backends[0].address: 10.0.2.2:8080 is routed via eth1, which has no IPv4 address to dial it from, and the listener sets no IPv4 source; add one to eth1 or set listeners[0].source",
				"x.yaml:14: listeners[1].backends[0].address: 10.0.2.2:8080 is routed via eth1, which has no IPv4 address to dial it from, and the listener sets no IPv4 source; add one to eth1 or set listeners[1].source",
				"x.yaml:22: listeners[3].backends[0].address: 10.0.2.3:8080 is routed via eth1, which has no IPv4 address to dial it from, and the listener sets no IPv4 source; add one to eth1 or set listeners[3].source",
			},
		},
		{
			name: "a listener source of the family is enough",
			host: func(h *fakeSystem) { h.links[2].Addrs = pfx("fd00:2::1/64") },
			yaml: func(s string) string {
				return strings.ReplaceAll(s, "    backends:\n      - address: 10.0.2.", "    source: 10.0.2.100\n    backends:\n      - address: 10.0.2.")
			},
		},
		{
			name: "IPv6 backend, only link-local IPv6 on the routed interface",
			host: func(h *fakeSystem) { h.links[2].Addrs = pfx("10.0.2.1/24", "fe80::2/64") },
			want: []string{
				"x.yaml:18: listeners[2].backends[0].address: [fd00:2::2]:8080 is routed via eth1, which has no IPv6 address to dial it from (link-local ones do not count), and the listener sets no IPv6 source; add a global or unique-local one to eth1 or set listeners[2].source",
				"x.yaml:26: listeners[4].backends[0].address: [fd00:2::2]:8080 is routed via eth1, which has no IPv6 address to dial it from (link-local ones do not count), and the listener sets no IPv6 source; add a global or unique-local one to eth1 or set listeners[4].source",
			},
		},
		{
			name: "IPv6 source set, only link-local on the interface",
			host: func(h *fakeSystem) { h.links[2].Addrs = pfx("10.0.2.1/24", "fe80::2/64") },
			yaml: func(s string) string {
				return strings.ReplaceAll(s, "    backends:\n      - address: \"[fd00:2::2]:8080\"", "    source: fd00:2::100\n    backends:\n      - address: \"[fd00:2::2]:8080\"")
			},
		},
		{
			name: "interface missing",
			yaml: func(s string) string { return strings.Replace(s, "name: eth1\n", "name: eth7\n", 1) },
			host: func(h *fakeSystem) {
				for i := range h.routes {
					if h.routes[i].dev == "eth1" {
						h.routes[i].dev = "eth7"
					}
				}
			},
			want: []string{"x.yaml:3: interfaces[1].name: interface eth7 does not exist in this network namespace"},
		},
		{
			name: "interface not Ethernet (no MAC)",
			host: func(h *fakeSystem) { h.links[2].Type, h.links[2].MAC = "none", nil },
			want: []string{"x.yaml:3: interfaces[1].name: interface eth1 is not Ethernet (link type none, no MAC address); XDP and the engine need an Ethernet interface with a 6-byte MAC address"},
		},
		{
			name: "interface not Ethernet (loopback)",
			yaml: func(s string) string { return strings.Replace(s, "name: eth1\n", "name: lo\n", 1) },
			host: func(h *fakeSystem) {
				for i := range h.routes {
					if h.routes[i].dev == "eth1" {
						h.routes[i].dev = "lo"
					}
				}
			},
			want: []string{"x.yaml:3: interfaces[1].name: interface lo is not Ethernet (link type loopback); XDP and the engine need an Ethernet interface with a 6-byte MAC address"},
		},
		{
			name: "interface down",
			host: func(h *fakeSystem) { h.links[1].Up = false },
			want: []string{"x.yaml:2: interfaces[0].name: interface eth0 is down; bring it up (ip link set eth0 up)"},
		},
		{
			name: "listener address on an unconfigured interface",
			yaml: func(s string) string {
				return strings.Replace(s, "address: 10.0.1.50:80\n", "address: 10.0.3.1:80\n", 1)
			},
			want: []string{"x.yaml:20: listeners[3].address: 10.0.3.1 is assigned to eth2, which is not under interfaces: (eth0, eth1); clients' packets for it arrive on eth2, where no XDP program runs; add eth2 under interfaces: or remove the address from it"},
		},
		{
			name: "IPv6 listener address on an unconfigured interface",
			yaml: func(s string) string { return strings.Replace(s, `"[fd00:1::50]:80"`, `"[fd00:3::1]:80"`, 1) },
			want: []string{"x.yaml:24: listeners[4].address: fd00:3::1 is assigned to eth2, which is not under interfaces: (eth0, eth1); clients' packets for it arrive on eth2, where no XDP program runs; add eth2 under interfaces: or remove the address from it"},
		},
		{
			name: "IPv6 listener, IPv6 disabled on every configured interface",
			yaml: func(s string) string {
				// The IPv6 backends would have no route: make them IPv4.
				return strings.ReplaceAll(s, `"[fd00:2::2]:8080"`, "10.0.2.9:8080")
			},
			host: func(h *fakeSystem) { h.v6off["eth0"], h.v6off["eth1"] = true, true },
			want: []string{"x.yaml:24: listeners[4].address: [fd00:1::50]:80 is IPv6, but IPv6 is disabled on every configured interface (eth0, eth1); enable it (sysctl net.ipv6.conf.eth0.disable_ipv6=0)"},
		},
		{
			name: "IPv6 disabled on one configured interface only",
			host: func(h *fakeSystem) { h.v6off["eth0"] = true },
		},
		{
			name: "several problems in line order",
			yaml: func(s string) string {
				s = strings.Replace(s, "name: eth1\n", "name: eth7\n", 1)
				return strings.Replace(s, "address: 10.0.1.50:80\n", "address: 10.0.3.1:80\n", 1)
			},
			want: []string{
				"x.yaml:3: interfaces[1].name: interface eth7 does not exist in this network namespace",
				"x.yaml:8: listeners[0].backends[0].address: 10.0.2.2:8080 is routed via eth1 (10.0.2.0/24 dev eth1 src 10.0.2.1), not through a configured interface (eth0, eth7); add eth1 under interfaces: or use dial: kernel",
				"x.yaml:14: listeners[1].backends[0].address: 10.0.2.2:8080 is routed via eth1 (10.0.2.0/24 dev eth1 src 10.0.2.1), not through a configured interface (eth0, eth7); add eth1 under interfaces: or use dial: kernel",
				"x.yaml:18: listeners[2].backends[0].address: [fd00:2::2]:8080 is routed via eth1 (fd00:2::/64 dev eth1), not through a configured interface (eth0, eth7); add eth1 under interfaces: or use dial: kernel",
				"x.yaml:20: listeners[3].address: 10.0.3.1 is assigned to eth2, which is not under interfaces: (eth0, eth7); clients' packets for it arrive on eth2, where no XDP program runs; add eth2 under interfaces: or remove the address from it",
				"x.yaml:22: listeners[3].backends[0].address: 10.0.2.3:8080 is routed via eth1 (10.0.2.0/24 dev eth1 src 10.0.2.1), not through a configured interface (eth0, eth7); add eth1 under interfaces: or use dial: kernel",
				"x.yaml:26: listeners[4].backends[0].address: [fd00:2::2]:8080 is routed via eth1 (fd00:2::/64 dev eth1), not through a configured interface (eth0, eth7); add eth1 under interfaces: or use dial: kernel",
			},
		},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			yaml := goodYAML
			if tc.yaml != nil {
				yaml = tc.yaml(yaml)
				if yaml == goodYAML {
					t.Fatal("the edit of the config did not apply")
				}
			}
			h := goodHost()
			if tc.host != nil {
				tc.host(h)
			}
			got := check(t, yaml, h)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestSourceFamilyIsConfigs: a listener source of another family than a
// backend is config.Load's error already; Check never sees such a config.
func TestSourceFamilyIsConfigs(t *testing.T) {
	yaml := strings.Replace(goodYAML, "    backends:\n      - address: \"[fd00:2::2]", "    source: 10.0.1.1\n    backends:\n      - address: \"[fd00:2::2]", 1)
	_, err := config.Parse("x.yaml", []byte(yaml))
	if err == nil || !strings.Contains(err.Error(), "x.yaml:19: listeners[2].backends[0].address: address family differs from the listener's source 10.0.1.1") {
		t.Fatalf("config.Parse: %v; want the family error", err)
	}
}

func TestHostUnreadable(t *testing.T) {
	h := goodHost()
	h.linkErr = errors.New("operation not permitted")
	err := Check("x.yaml", parse(t, goodYAML), h)
	var errs *config.Errors
	if err == nil || errors.As(err, &errs) || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("Check on an unreadable host: %v; want the host's error", err)
	}
}
