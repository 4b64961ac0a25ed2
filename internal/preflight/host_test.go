package preflight

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/internal/lab"
)

// hostLab is a namespace with two veths: e0 (10.0.1.1/24, fd00:1::1/64, a
// default route through 10.0.1.254) and e1 (10.0.3.1/24, fd00:3::1/64), and
// a dummy interface with a VIP.
func hostLab(t *testing.T) (px *lab.NS, e0, e1 string) {
	t.Helper()
	lab.RequireRoot(t)
	l, err := lab.New(t)
	if err != nil {
		t.Fatal(err)
	}
	px, err = l.NS("px")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := l.NS("peer")
	if err != nil {
		t.Fatal(err)
	}
	v0, err := l.Link(px, "e0", peer, "f0", lab.LinkOpts{
		AAddrs: pfx("10.0.1.1/24", "fd00:1::1/64"), BAddrs: pfx("10.0.1.254/24", "fd00:1::fe/64"),
	})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := l.Link(px, "e1", peer, "f1", lab.LinkOpts{
		AAddrs: pfx("10.0.3.1/24", "fd00:3::1/64"), BAddrs: pfx("10.0.3.2/24", "fd00:3::2/64"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.1.254")); err != nil {
		t.Fatal(err)
	}
	return px, v0.A.Name, v1.A.Name
}

// TestHost reads a lab namespace through Host: what each method gives.
func TestHost(t *testing.T) {
	px, e0, e1 := hostLab(t)
	err := px.Do(func() error {
		h := Host()
		links, err := h.Links()
		if err != nil {
			return err
		}
		byName := map[string]Link{}
		for _, l := range links {
			byName[l.Name] = l
		}
		if lo := byName["lo"]; lo.Type != "loopback" || !lo.Up {
			t.Errorf("lo: %+v; want type loopback, up", lo)
		}
		for _, name := range []string{e0, e1} {
			l := byName[name]
			if l.Type != "ether" || len(l.MAC) != 6 || !l.Up || l.NoARP {
				t.Errorf("%s: %+v; want an up Ethernet link", name, l)
			}
		}
		if got := byName[e1].Addrs; !containsPrefix(got, "10.0.3.1/24") || !containsPrefix(got, "fd00:3::1/64") {
			t.Errorf("%s addresses %v; want 10.0.3.1/24 and fd00:3::1/64", e1, got)
		}

		for _, tc := range []struct {
			dst, dev, text string
			local          bool
		}{
			{"10.0.3.2", e1, "10.0.3.0/24 dev " + e1 + " src 10.0.3.1", false},
			{"192.0.2.7", e0, "default via 10.0.1.254 dev " + e0, false},
			{"fd00:3::2", e1, "fd00:3::/64 dev " + e1 + " metric 256", false},
			{"10.0.1.1", "lo", "local 10.0.1.1 dev lo src 10.0.1.1", true},
		} {
			r, err := h.RouteGet(netip.MustParseAddr(tc.dst))
			if err != nil || r.Dev != tc.dev || r.Text != tc.text || r.Local != tc.local {
				t.Errorf("RouteGet(%s) = %+v, %v; want dev %s, text %q, local %v", tc.dst, r, err, tc.dev, tc.text, tc.local)
			}
		}
		if r, err := h.RouteGet(netip.MustParseAddr("2001:db8::1")); !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("RouteGet without a route = %+v, %v; want network is unreachable", r, err)
		}

		if off, err := h.IPv6Disabled(e1); off || err != nil {
			t.Errorf("IPv6Disabled(%s) = %v, %v; want false", e1, off, err)
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+e1+"/disable_ipv6", []byte("1\n"), 0o644); err != nil {
			return err
		}
		if off, err := h.IPv6Disabled(e1); !off || err != nil {
			t.Errorf("IPv6Disabled(%s) after disabling = %v, %v; want true", e1, off, err)
		}
		if _, err := h.IPv6Disabled("nosuch0"); err == nil {
			t.Errorf("IPv6Disabled of a missing interface: no error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The namespace's sysctl, not the test's own.
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + e1 + "/disable_ipv6"); err == nil {
		t.Errorf("%s's disable_ipv6 is visible outside its namespace: %q", e1, b)
	}
}

// TestHostCheck runs Check through Host in the lab: a backend behind the
// unconfigured e1 is named with the kernel's route; configured, it passes;
// a down interface is named.
func TestHostCheck(t *testing.T) {
	px, e0, e1 := hostLab(t)
	yaml := `interfaces:
  - name: ` + e0 + `
listeners:
  - name: web
    address: 10.0.1.1:80
    backends:
      - address: 192.0.2.7:80
      - address: 10.0.3.2:80
`
	run := func(yaml string) []string {
		t.Helper()
		cfg, err := config.Parse("x.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		var checkErr error
		if err := px.Do(func() error {
			checkErr = Check("x.yaml", cfg, Host())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var errs *config.Errors
		if checkErr != nil && !errors.As(checkErr, &errs) {
			t.Fatal(checkErr)
		}
		if errs != nil {
			for _, e := range *errs {
				out = append(out, e.Error())
			}
		}
		return out
	}
	want := "x.yaml:8: listeners[0].backends[1].address: 10.0.3.2:80 is routed via " + e1 + " (10.0.3.0/24 dev " + e1 + " src 10.0.3.1), not through a configured interface (" + e0 + "); add " + e1 + " under interfaces: or use dial: kernel"
	if got := run(yaml); len(got) != 1 || got[0] != want {
		t.Errorf("backend via the unconfigured interface:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	both := strings.Replace(yaml, "listeners:\n", "  - name: "+e1+"\nlisteners:\n", 1)
	if got := run(both); len(got) != 0 {
		t.Errorf("both interfaces configured:\n%s", strings.Join(got, "\n"))
	}
	l, err := px.Netlink().LinkByName(e1)
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Netlink().LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	// Down, e1's routes are gone: the backend has none of its own and
	// takes the default route through e0.
	want = "x.yaml:3: interfaces[1].name: interface " + e1 + " is down; bring it up (ip link set " + e1 + " up)"
	if got := run(both); len(got) != 1 || got[0] != want {
		t.Errorf("a configured interface down:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}

func containsPrefix(list []netip.Prefix, s string) bool {
	for _, p := range list {
		if p == netip.MustParsePrefix(s) {
			return true
		}
	}
	return false
}
