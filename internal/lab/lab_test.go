package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

var (
	a4 = netip.MustParsePrefix("10.77.0.1/24")
	b4 = netip.MustParsePrefix("10.77.0.2/24")
	a6 = netip.MustParsePrefix("fd77::1/64")
	b6 = netip.MustParsePrefix("fd77::2/64")
)

func newLab(t *testing.T) *Lab {
	t.Helper()
	RequireRoot(t)
	l, err := New(t)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// twoNS makes namespaces a and b.
func twoNS(t *testing.T, l *Lab) (*NS, *NS) {
	t.Helper()
	a, err := l.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NS("b")
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// pair makes namespaces a and b joined by a veth with a4/a6 and b4/b6.
func pair(t *testing.T, l *Lab, o LinkOpts) (*NS, *NS, *Veth) {
	t.Helper()
	a, b := twoNS(t, l)
	o.AAddrs = []netip.Prefix{a4, a6}
	o.BAddrs = []netip.Prefix{b4, b6}
	v, err := l.Link(a, "eth0", b, "eth0", o)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, v
}

// roundTrip dials addr from ns and checks that an echo comes back.
func roundTrip(ns *NS, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.DialTCP(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("hello through " + ns.Name)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo: got %q, want %q", got, msg)
	}
	return nil
}

func TestLink(t *testing.T) {
	for _, q := range []int{1, 4} {
		t.Run(fmt.Sprintf("queues=%d", q), func(t *testing.T) {
			l := newLab(t)
			a, b, v := pair(t, l, LinkOpts{Queues: q, MTU: 1400})
			for _, e := range []*End{v.A, v.B} {
				if !strings.HasPrefix(e.Name, l.Prefix()) || len(e.Name) > 15 {
					t.Errorf("interface name %q: want prefix %q, ≤ 15 bytes", e.Name, l.Prefix())
				}
				if e.Index <= 0 || len(e.MAC) != 6 {
					t.Errorf("%s: index %d, MAC %v", e.Name, e.Index, e.MAC)
				}
				link, err := e.NS.Netlink().LinkByName(e.Name)
				if err != nil {
					t.Fatal(err)
				}
				at := link.Attrs()
				if at.MTU != 1400 || at.NumTxQueues != q || at.NumRxQueues != q || at.OperState != netlink.OperUp {
					t.Errorf("%s: MTU %d, queues tx %d rx %d, oper %v; want 1400, %d, %d, up",
						e.Name, at.MTU, at.NumTxQueues, at.NumRxQueues, at.OperState, q, q)
				}
				addrs, err := e.NS.Netlink().AddrList(link, netlink.FAMILY_ALL)
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range e.Addrs {
					found := false
					for _, got := range addrs {
						if got.IPNet.String() == want.String() {
							found = true
						}
					}
					if !found {
						t.Errorf("%s: address %v missing (have %v)", e.Name, want, addrs)
					}
				}
			}
			if v.A.IP4() != a4.Addr() || v.B.IP6() != b6.Addr() {
				t.Errorf("IP4/IP6: %v %v", v.A.IP4(), v.B.IP6())
			}
			if q > 1 {
				out, err := b.Run(context.Background(), "ls", "/sys/class/net/"+v.B.Name+"/queues")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, fmt.Sprintf("rx-%d", q-1)) || !strings.Contains(out, fmt.Sprintf("tx-%d", q-1)) {
					t.Errorf("sysfs queues of %s: %q", v.B.Name, out)
				}
			}
			ln, err := b.ListenTCP(":7000")
			if err != nil {
				t.Fatal(err)
			}
			ServeEcho(ln)
			for _, addr := range []string{"10.77.0.2:7000", "[fd77::2]:7000"} {
				if err := roundTrip(a, addr, 5*time.Second); err != nil {
					t.Errorf("%s: %v", addr, err)
				}
			}
			// The listener lives in b only: a has nothing on 7000.
			if err := roundTrip(a, "127.0.0.1:7000", time.Second); err == nil {
				t.Error("a reached b's listener through its own loopback")
			}
		})
	}
}

func TestDo(t *testing.T) {
	l := newLab(t)
	a, _, v := pair(t, l, LinkOpts{})
	var names []string
	err := a.Do(func() error {
		links, err := netlink.LinkList()
		for _, ln := range links {
			names = append(names, ln.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || !contains(names, "lo") || !contains(names, v.A.Name) {
		t.Errorf("links in %s: %v, want lo and %s", a.Name, names, v.A.Name)
	}
	root, err := rootLinkNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range root {
		if strings.HasPrefix(n, l.Prefix()) {
			t.Errorf("lab interface %s in the root namespace", n)
		}
	}
	wantErr := errors.New("from fn")
	if err := a.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do error: %v", err)
	}
	if err := a.Do(func() error { runtime.Goexit(); return nil }); err == nil || !strings.Contains(err.Error(), "Goexit") {
		t.Errorf("Do with Goexit: %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "boom") {
				t.Errorf("panic in Do: recovered %v", r)
			}
		}()
		a.Do(func() error { panic("boom") })
	}()
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func TestLoss(t *testing.T) {
	l := newLab(t)
	a, b, _ := pair(t, l, LinkOpts{})
	ln, err := b.ListenTCP(":7001")
	if err != nil {
		t.Fatal(err)
	}
	ServeEcho(ln)
	if err := roundTrip(a, "10.77.0.2:7001", 5*time.Second); err != nil {
		t.Fatal("before loss: ", err)
	}
	for _, dir := range []Direction{In, Out} {
		undo, err := b.Loss("eth0", 100, dir) // short name
		if err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{"10.77.0.2:7001", "[fd77::2]:7001"} {
			if err := roundTrip(a, addr, 700*time.Millisecond); err == nil {
				t.Errorf("%s with 100%% loss (%v): connected", addr, dir)
			}
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		if err := undo(); err != nil {
			t.Fatal("second undo: ", err)
		}
		for _, addr := range []string{"10.77.0.2:7001", "[fd77::2]:7001"} {
			if err := roundTrip(a, addr, 5*time.Second); err != nil {
				t.Errorf("%s after undo (%v): %v", addr, dir, err)
			}
		}
	}
	// A partial loss uses the statistic match; the rule is left for cleanup.
	if _, err := a.Loss("", 12.5, Both); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(context.Background(), "iptables", "-S")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "--probability 0.125") || !strings.Contains(out, "-A OUTPUT") {
		t.Errorf("iptables -S:\n%s", out)
	}
	if _, err := a.Loss("eth9", 10, In); err == nil {
		t.Error("Loss on a missing interface: no error")
	}
	if _, err := a.Loss("eth0", 0, In); err == nil {
		t.Error("Loss 0%: no error")
	}
}

func TestRouting(t *testing.T) {
	l := newLab(t)
	cli, _ := l.NS("cli")
	rtr, _ := l.NS("rtr")
	srv, _ := l.NS("srv")
	p := netip.MustParsePrefix
	if _, err := l.Link(cli, "c0", rtr, "r0", LinkOpts{AAddrs: []netip.Prefix{p("10.78.1.2/24"), p("fd78:1::2/64")}, BAddrs: []netip.Prefix{p("10.78.1.1/24"), p("fd78:1::1/64")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Link(rtr, "r1", srv, "s0", LinkOpts{AAddrs: []netip.Prefix{p("10.78.2.1/24"), p("fd78:2::1/64")}, BAddrs: []netip.Prefix{p("10.78.2.2/24"), p("fd78:2::2/64")}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		ns  *NS
		dst string
		via string
	}{{cli, "0.0.0.0/0", "10.78.1.1"}, {cli, "::/0", "fd78:1::1"}, {srv, "10.78.1.0/24", "10.78.2.1"}, {srv, "fd78:1::/64", "fd78:2::1"}} {
		if err := r.ns.AddRoute(p(r.dst), netip.MustParseAddr(r.via)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.AddRoute(p("10.1.0.0/16"), netip.MustParseAddr("fd78:1::1")); err == nil {
		t.Error("AddRoute with mixed families: no error")
	}
	ln, err := srv.ListenTCP(":7002")
	if err != nil {
		t.Fatal(err)
	}
	ServeEcho(ln)
	addrs := []string{"10.78.2.2:7002", "[fd78:2::2]:7002"}
	for _, addr := range addrs {
		if err := roundTrip(cli, addr, 700*time.Millisecond); err == nil {
			t.Errorf("%s: connected with forwarding off", addr)
		}
	}
	if err := rtr.SetForwarding(true); err != nil {
		t.Fatal(err)
	}
	out, err := rtr.Run(context.Background(), "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
	if err != nil || out != "1\n1\n" {
		t.Errorf("forwarding in %s: %q %v", rtr.Name, out, err)
	}
	for _, addr := range addrs {
		if err := roundTrip(cli, addr, 5*time.Second); err != nil {
			t.Errorf("%s through the router: %v", addr, err)
		}
	}
	undo, err := rtr.Loss("r0", 100, ForwardIn)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range addrs {
		if err := roundTrip(cli, addr, 700*time.Millisecond); err == nil {
			t.Errorf("%s: connected with 100%% forward loss", addr)
		}
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(cli, addrs[0], 5*time.Second); err != nil {
		t.Errorf("after undo: %v", err)
	}
}

func TestNeighAndSS(t *testing.T) {
	l := newLab(t)
	a, b, v := pair(t, l, LinkOpts{})
	mac, _ := net.ParseMAC("02:00:00:00:77:01")
	ip := netip.MustParseAddr("10.77.0.9")
	if err := a.Neigh(v.A.Name, ip, mac); err != nil {
		t.Fatal(err)
	}
	if err := a.Neigh("eth0", netip.MustParseAddr("fd77::9"), mac); err != nil {
		t.Fatal(err)
	}
	neighs, err := a.Netlink().NeighList(v.A.Index, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ne := range neighs {
		if (ne.IP.Equal(ip.AsSlice()) || ne.IP.Equal(net.ParseIP("fd77::9"))) && ne.HardwareAddr.String() == mac.String() && ne.State == netlink.NUD_PERMANENT {
			n++
		}
	}
	if n != 2 {
		t.Errorf("permanent neighbours: %v", neighs)
	}

	ln, err := b.ListenTCP("10.77.0.2:7003")
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.DialTCP(context.Background(), "10.77.0.2:7003")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := b.SS()
	if err != nil {
		t.Fatal(err)
	}
	if !regexpLine(out, "LISTEN", "10.77.0.2:7003") || !regexpLine(out, "ESTAB", "10.77.0.2:7003") {
		t.Errorf("ss in %s:\n%s", b.Name, out)
	}
	s.Close()
	out, _ = b.SS()
	if !regexpLine(out, "FIN-WAIT", "10.77.0.2:7003") {
		t.Logf("after close (FIN-WAIT expected):\n%s", out)
	}
	if root, err := exec.Command("ss", "-tan").CombinedOutput(); err == nil && strings.Contains(string(root), ":7003") {
		t.Errorf("root namespace sees the lab's sockets:\n%s", root)
	}
}

func regexpLine(out string, words ...string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return true
		}
	}
	return false
}

func TestStartAndClose(t *testing.T) {
	RequireRoot(t)
	l, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := l.NS("a")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sleeper, err := a.Start(ctx, "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	// A shell that leaves a grandchild in its process group, and one that
	// ignores SIGTERM.
	sh, err := a.Start(ctx, "sh", "-c", "sleep 1000 & echo child=$!; wait")
	if err != nil {
		t.Fatal(err)
	}
	stubborn, err := a.Start(ctx, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done")
	if err != nil {
		t.Fatal(err)
	}
	// Another process that escapes the process group but not the namespace.
	escaped, err := a.Start(ctx, "setsid", "-f", "sh", "-c", "echo pid=$$; exec sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	child := waitPid(t, sh, "child=")
	esc := waitPid(t, escaped, "pid=")
	waitOutput(t, stubborn, "ready")
	out, err := a.Run(ctx, "cat", "/proc/self/mountinfo")
	if err != nil || out == "" {
		t.Fatal(err)
	}
	if _, err := a.Run(ctx, "sh", "-c", "echo oops; exit 3"); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("Run error without output: %v", err)
	}
	if _, err := a.Run(ctx, "no-such-tool-xdp"); !errors.Is(err, ErrToolMissing) {
		t.Errorf("Run of a missing tool: %v", err)
	}
	pids := []int{sleeper.Pid(), sh.Pid(), child, stubborn.Pid(), esc}
	for _, p := range pids {
		if !alive(p) {
			t.Fatalf("pid %d not running before Close", p)
		}
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d survived Close", p)
		}
	}
	select {
	case <-sleeper.Done():
	default:
		t.Error("sleeper not done after Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.NS("b"); !errors.Is(err, ErrClosed) {
		t.Errorf("NS after Close: %v", err)
	}
	if _, err := a.Start(ctx, "sleep", "1"); err == nil {
		t.Error("Start after Close: no error")
	}
	assertGone(t, l.Prefix())
}

func waitOutput(t *testing.T, p *Proc, s string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if out := p.Output(); strings.Contains(out, s) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q in output of pid %d: %q", s, p.Pid(), p.Output())
	return ""
}

func waitPid(t *testing.T, p *Proc, key string) int {
	t.Helper()
	out := waitOutput(t, p, key)
	for f := range strings.FieldsSeq(out) {
		if v, ok := strings.CutPrefix(f, key); ok {
			if pid, err := strconv.Atoi(v); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no pid in %q", out)
	return 0
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// leftovers lists what still carries the prefix: namespaces, root
// interfaces, the reservation file.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	var left []string
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			left = append(left, "netns "+line)
		}
	}
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, "file "+filepath.Join(netnsDir, e.Name()))
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range links {
		if strings.HasPrefix(ln.Attrs().Name, prefix) {
			left = append(left, "link "+ln.Attrs().Name)
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir, prefix+"pid")); err == nil {
		left = append(left, "reservation "+prefix)
	}
	return left
}

func assertGone(t *testing.T, prefix string) {
	t.Helper()
	if left := leftovers(t, prefix); len(left) != 0 {
		t.Errorf("left behind by lab %s: %v", prefix, left)
	}
}

// TestLabHelperProcess is the body of the subprocess tests below; it does
// nothing unless LAB_HELPER_MODE is set.
func TestLabHelperProcess(t *testing.T) {
	mode := os.Getenv("LAB_HELPER_MODE")
	if mode == "" {
		return
	}
	l := newLab(t)
	a, b, _ := pair(t, l, LinkOpts{Queues: 2})
	p, err := a.Start(context.Background(), "sleep", "1000")
	if err != nil {
		t.Fatal(err)
	}
	// Escapes the process group, so only the namespace sweep (or nothing,
	// after SIGKILL) stops it.
	esc, err := b.Start(context.Background(), "setsid", "-f", "sh", "-c", "echo pid=$$; exec sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	escPid := waitPid(t, esc, "pid=")
	if _, err := a.Loss("eth0", 50, Both); err != nil {
		t.Fatal(err)
	}
	ln, err := b.ListenTCP(":7004")
	if err != nil {
		t.Fatal(err)
	}
	_ = ln // leaked on purpose: the lab closes it
	fmt.Printf("LABPREFIX=%s LABPIDS=%d,%d\n", l.Prefix(), p.Pid(), escPid)
	switch mode {
	case "fatal":
		t.Fatal("deliberate failure")
	case "panic":
		panic("deliberate panic")
	case "hang":
		time.Sleep(time.Hour)
	}
}

func helperCmd(mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestLabHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "LAB_HELPER_MODE="+mode)
	return cmd
}

func parseHelper(t *testing.T, line string) (prefix string, pids []int) {
	t.Helper()
	i := strings.Index(line, "LABPREFIX=")
	if i < 0 {
		return "", nil
	}
	var ps string
	if _, err := fmt.Sscanf(line[i:], "LABPREFIX=%s LABPIDS=%s", &prefix, &ps); err != nil {
		t.Fatalf("parsing %q: %v", line, err)
	}
	for s := range strings.SplitSeq(ps, ",") {
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return prefix, pids
}

// TestCleanupAfterFailure runs a test body that creates a lab and then fails
// (t.Fatal, or panics) in a subprocess, since a failing subtest would fail
// this test too, and checks that nothing of that lab remains.
func TestCleanupAfterFailure(t *testing.T) {
	RequireRoot(t)
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			out, err := helperCmd(mode).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("helper: want a failing exit, got %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "deliberate "+map[string]string{"fatal": "failure", "panic": "panic"}[mode]) {
				t.Fatalf("helper did not fail as planned:\n%s", out)
			}
			prefix, pids := parseHelper(t, string(out))
			if prefix == "" {
				t.Fatalf("no LABPREFIX in helper output:\n%s", out)
			}
			if strings.Contains(string(out), "cleanup:") {
				t.Errorf("helper's cleanup reported errors:\n%s", out)
			}
			assertGone(t, prefix)
			for _, p := range pids {
				if alive(p) {
					t.Errorf("pid %d survived", p)
				}
			}
		})
	}
}

// TestReapAfterKill SIGKILLs a process that holds a lab: nothing cleans up
// then, until the next New (ReapStale) in any process.
func TestReapAfterKill(t *testing.T) {
	RequireRoot(t)
	cmd := helperCmd("hang")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var prefix string
	var pids []int
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if prefix, pids = parseHelper(t, sc.Text()); prefix != "" {
			break
		}
	}
	if prefix == "" {
		cmd.Wait()
		t.Fatalf("no LABPREFIX from helper:\n%s", strings.Join(lines, "\n"))
	}
	go io.Copy(io.Discard, stdout)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if left := leftovers(t, prefix); len(left) == 0 {
		t.Fatal("a SIGKILLed lab left nothing behind; the test proves nothing")
	}
	if err := ReapStale(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, prefix)
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d survived", p)
		}
	}
}

func TestConcurrentLabs(t *testing.T) {
	RequireRoot(t)
	const n = 4
	labs := make([]*Lab, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l, err := New(t)
			if err != nil {
				errs[i] = err
				return
			}
			labs[i] = l
			a, err := l.NS("a")
			if err == nil {
				var b *NS
				if b, err = l.NS("b"); err == nil {
					_, err = l.Link(a, "eth0", b, "eth0", LinkOpts{AAddrs: []netip.Prefix{a4}, BAddrs: []netip.Prefix{b4}})
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, l := range labs {
		if errs[i] != nil {
			t.Fatalf("lab %d: %v", i, errs[i])
		}
		if seen[l.Prefix()] {
			t.Errorf("prefix %s used twice", l.Prefix())
		}
		seen[l.Prefix()] = true
	}
	// Same addresses in every lab, no interference.
	for _, l := range labs {
		b := l.byName["b"]
		ln, err := b.ListenTCP(":7005")
		if err != nil {
			t.Fatal(err)
		}
		ServeEcho(ln)
		if err := roundTrip(l.byName["a"], "10.77.0.2:7005", 5*time.Second); err != nil {
			t.Errorf("lab %s: %v", l.Prefix(), err)
		}
	}
}

// TestChecksums captures, on the receiving end, the TCP segments the other
// namespace's kernel sends, and checks that their checksums are complete
// with DisableTxChecksum and (as the package doc says) only partial without.
func TestChecksums(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableTxChecksum=%v", off), func(t *testing.T) {
			l := newLab(t)
			a, b, v := pair(t, l, LinkOpts{DisableTxChecksum: off})
			out, err := a.Run(context.Background(), "ethtool", "-k", v.A.Name)
			if err == nil && off && !strings.Contains(out, "tx-checksumming: off") {
				t.Errorf("ethtool -k %s:\n%s", v.A.Name, out)
			}
			pcap := filepath.Join(t.TempDir(), "b.pcap")
			stop, err := b.Capture(context.Background(), "eth0", "tcp port 7006", pcap)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := b.ListenTCP(":7006")
			if err != nil {
				t.Fatal(err)
			}
			ServeEcho(ln)
			if err := roundTrip(a, "10.77.0.2:7006", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(a, "[fd77::2]:7006", 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if err := stop(); err != nil {
				t.Fatal("second stop: ", err)
			}
			defer func() {
				if t.Failed() {
					dump, _ := exec.Command("tcpdump", "-r", pcap, "-e", "-n", "-vv").CombinedOutput()
					t.Logf("%s", dump)
				}
			}()
			good, bad := checkPcap(t, pcap, v.A.MAC)
			t.Logf("segments from a: %d with a full checksum, %d partial", good, bad)
			if good+bad < 6 {
				t.Fatalf("captured only %d segments from a", good+bad)
			}
			if off && bad != 0 {
				t.Errorf("%d segments with a wrong checksum despite DisableTxChecksum", bad)
			}
			if !off && bad == 0 {
				t.Errorf("no partial checksums with offload on: the package doc is wrong")
			}
		})
	}
}

// checkPcap counts the TCP segments sent from mac in the pcap file whose
// checksum verifies, and those whose does not.
func checkPcap(t *testing.T, file string, mac net.HardwareAddr) (good, bad int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("not a little-endian pcap: %d bytes", len(b))
	}
	if lt := binary.LittleEndian.Uint32(b[20:]); lt != 1 {
		t.Fatalf("link type %d, want Ethernet", lt)
	}
	for b = b[24:]; len(b) >= 16; {
		incl := int(binary.LittleEndian.Uint32(b[8:]))
		orig := int(binary.LittleEndian.Uint32(b[12:]))
		if 16+incl > len(b) {
			break
		}
		f := b[16 : 16+incl]
		b = b[16+incl:]
		if incl != orig || len(f) < 14 || string(f[6:12]) != string(mac) {
			continue
		}
		var pseudo []byte
		var seg []byte
		switch binary.BigEndian.Uint16(f[12:]) {
		case 0x0800:
			ip := f[14:]
			ihl := int(ip[0]&0xf) * 4
			tot := int(binary.BigEndian.Uint16(ip[2:]))
			if ip[9] != 6 || tot > len(ip) {
				continue
			}
			seg = ip[ihl:tot]
			pseudo = append(append([]byte{}, ip[12:20]...), 0, 6, byte(len(seg)>>8), byte(len(seg)))
		case 0x86dd:
			ip := f[14:]
			pl := int(binary.BigEndian.Uint16(ip[4:]))
			if ip[6] != 6 || 40+pl > len(ip) {
				continue
			}
			seg = ip[40 : 40+pl]
			pseudo = append(append([]byte{}, ip[8:40]...), 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, 6)
		default:
			continue
		}
		if sum16(append(pseudo, seg...)) == 0xffff {
			good++
		} else {
			bad++
		}
	}
	return good, bad
}

func sum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestRequireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the root branch is what runs here")
	}
	RequireRoot(t) // must return
}

func TestEnsureTools(t *testing.T) {
	if err := EnsureTools("ip", "ss"); err != nil {
		t.Fatal(err)
	}
	if p, err := LookTool("ip"); err != nil || !filepath.IsAbs(p) {
		t.Errorf("LookTool(ip) = %q, %v", p, err)
	}
	if _, err := LookTool("no-such-tool-xdp"); !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "Debian package") {
		t.Errorf("LookTool of a missing tool: %v", err)
	}
}
