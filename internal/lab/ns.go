package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace of a lab.
type NS struct {
	// Name is the full namespace name (lab prefix + the name given to
	// Lab.NS), as listed by `ip netns list`.
	Name string

	lab   *Lab
	short string
	nl    *netlink.Handle // netlink socket inside the namespace

	mu   sync.RWMutex // guards h against destroy
	h    netns.NsHandle
	gone bool
}

// NS creates the network namespace prefix+name with its loopback up.
func (l *Lab) NS(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("lab: bad namespace name %q", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if _, dup := l.byName[name]; dup {
		return nil, fmt.Errorf("lab: namespace %q already exists in this lab", name)
	}
	n := &NS{Name: l.prefix + name, lab: l, short: name, h: -1}
	if err := createNamedNS(n.Name); err != nil {
		return nil, fmt.Errorf("lab: creating namespace %s: %w", n.Name, err)
	}
	// From here on, destroy undoes whatever was done.
	l.nss = append(l.nss, n)
	l.byName[name] = n
	fail := func(err error) (*NS, error) {
		l.nss = l.nss[:len(l.nss)-1]
		delete(l.byName, name)
		return nil, errors.Join(fmt.Errorf("lab: namespace %s: %w", n.Name, err), n.destroy())
	}
	var err error
	if n.h, err = netns.GetFromPath(n.Path()); err != nil {
		return fail(err)
	}
	if n.nl, err = netlink.NewHandleAt(n.h); err != nil {
		return fail(err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return fail(err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return fail(fmt.Errorf("loopback up: %w", err))
	}
	return n, nil
}

// Path is the namespace's bind mount, /run/netns/<Name>.
func (n *NS) Path() string { return filepath.Join(netnsDir, n.Name) }

// Lab returns the lab the namespace belongs to.
func (n *NS) Lab() *Lab { return n.lab }

// Netlink returns a netlink handle whose requests act inside the namespace.
// It is closed with the lab.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

func (n *NS) String() string { return n.Name }

// destroy closes the handles and deletes the named namespace. The kernel
// frees the namespace when its last process and socket are gone.
func (n *NS) destroy() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gone {
		return nil
	}
	n.gone = true
	if n.nl != nil {
		n.nl.Close()
	}
	if n.h >= 0 {
		n.h.Close()
	}
	if err := netns.DeleteNamed(n.Name); err != nil && !os.IsNotExist(err) {
		// Not mounted (a failed create) but the file may exist.
		if rerr := os.Remove(n.Path()); rerr != nil && !os.IsNotExist(rerr) {
			return fmt.Errorf("lab: deleting namespace %s: %w", n.Name, err)
		}
	}
	return nil
}

var netnsDirMu sync.Mutex

// ensureNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does, so that unmounting a namespace there propagates into the mount
// namespaces that `ip netns exec` creates (otherwise a long-running process
// started that way would pin every namespace that existed when it started).
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	// Serialize with other processes doing the same (two bind mounts would
	// stack).
	if f, err := os.OpenFile(filepath.Join(stateDir, "netns.lock"), os.O_CREATE|os.O_RDWR, 0o644); err == nil {
		defer f.Close()
		_ = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	for try := 0; ; try++ {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if err != unix.EINVAL || try > 0 {
			return fmt.Errorf("lab: making %s a shared mount: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("lab: bind-mounting %s: %w", netnsDir, err)
		}
	}
}

// createNamedNS creates a network namespace and bind-mounts it at
// /run/netns/name, on a locked thread that returns to its namespace after.
func createNamedNS(name string) error {
	path := filepath.Join(netnsDir, name)
	return onLockedThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return err
		}
		f.Close()
		src := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(path)
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	}, netns.None())
}

// onLockedThread runs fn on a goroutine locked to its OS thread, after
// switching the thread to target (unless target is netns.None()), and puts
// the thread back into its original namespace after. If that fails the
// goroutine exits still locked, so the runtime discards the thread instead
// of reusing it in the wrong namespace. A panic in fn is re-raised in the
// caller's goroutine; runtime.Goexit in fn (t.FailNow) becomes an error.
func onLockedThread(fn func() error, target netns.NsHandle) error {
	type result struct {
		err      error
		panicked bool
		pval     any
		stack    []byte
		goexit   bool
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("lab: current namespace: %w", err)}
			return
		}
		var r result
		normal := false
		defer func() {
			if !normal {
				if p := recover(); p != nil {
					r.panicked, r.pval, r.stack = true, p, debug.Stack()
				} else {
					r.goexit = true
				}
			}
			// Always restore: fn may have switched namespaces itself.
			if err := netns.Set(orig); err != nil {
				r.err = errors.Join(r.err, fmt.Errorf("lab: restoring the thread's namespace (thread discarded): %w", err))
			} else {
				runtime.UnlockOSThread()
			}
			orig.Close()
			ch <- r
		}()
		if target.IsOpen() {
			if err := netns.Set(target); err != nil {
				r.err = fmt.Errorf("lab: entering namespace: %w", err)
				normal = true
				return
			}
		}
		r.err = fn()
		normal = true
	}()
	r := <-ch
	if r.panicked {
		if e, ok := r.pval.(error); ok {
			panic(fmt.Errorf("lab: panic in namespace goroutine: %w\n%s", e, r.stack))
		}
		panic(fmt.Sprintf("lab: panic in namespace goroutine: %v\n%s", r.pval, r.stack))
	}
	if r.goexit {
		return errors.Join(r.err, errors.New("lab: the function called runtime.Goexit (t.FailNow/t.Fatal/t.Skip?) inside NS.Do; return an error instead"))
	}
	return r.err
}

// Do runs fn on an OS thread inside the namespace and waits for it. Sockets
// fn creates stay in the namespace; goroutines fn starts do not run in it.
// The thread returns to its original namespace after; if that fails it is
// not reused. A panic in fn is re-raised in the caller.
func (n *NS) Do(fn func() error) error {
	n.mu.RLock()
	if n.gone {
		n.mu.RUnlock()
		return ErrClosed
	}
	// Keep the handle open only while entering the namespace.
	fd, err := unix.FcntlInt(uintptr(n.h), unix.F_DUPFD_CLOEXEC, 0)
	n.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	h := netns.NsHandle(fd)
	defer h.Close()
	return onLockedThread(fn, h)
}

func (n *NS) open() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.gone {
		return ErrClosed
	}
	return nil
}

// ifname resolves an interface name given in full or as the short name
// passed to Link.
func (n *NS) ifname(iface string) (string, error) {
	if err := n.open(); err != nil {
		return "", err
	}
	if _, err := n.nl.LinkByName(iface); err == nil {
		return iface, nil
	}
	full := ifName(n.lab.prefix, iface)
	if _, err := n.nl.LinkByName(full); err == nil {
		return full, nil
	}
	return "", fmt.Errorf("lab: no interface %q (nor %q) in namespace %s", iface, full, n.Name)
}

func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// AddRoute adds a route to dst through the gateway via (same family).
func (n *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	if err := n.open(); err != nil {
		return err
	}
	if !dst.IsValid() || !via.IsValid() {
		return fmt.Errorf("lab: AddRoute(%v, %v): invalid prefix or gateway", dst, via)
	}
	if dst.Addr().Unmap().Is4() != via.Unmap().Is4() {
		return fmt.Errorf("lab: AddRoute(%v, %v): address families differ", dst, via)
	}
	r := &netlink.Route{Dst: ipNet(dst.Masked()), Gw: via.Unmap().AsSlice()}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("lab: %s: route %v via %v: %w", n.Name, dst, via, err)
	}
	return nil
}

// SetForwarding turns IPv4 and IPv6 forwarding on or off in the namespace.
func (n *NS) SetForwarding(on bool) error {
	v := []byte("0\n")
	if on {
		v = []byte("1\n")
	}
	return n.Do(func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", v, 0o644); err != nil {
			return fmt.Errorf("lab: %s: %w", n.Name, err)
		}
		const v6 = "/proc/sys/net/ipv6/conf/all/forwarding"
		if _, err := os.Stat(v6); err == nil {
			if err := os.WriteFile(v6, v, 0o644); err != nil {
				return fmt.Errorf("lab: %s: %w", n.Name, err)
			}
		}
		return nil
	})
}

// Sysctl sets the namespace's sysctl key ("net.ipv4.tcp_rmem", or the path
// under /proc/sys) to value. Only per-namespace keys (net.*) are the
// namespace's own; others are the machine's.
func (n *NS) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if strings.Contains(key, "/") {
		path = filepath.Join("/proc/sys", key)
	}
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
			return fmt.Errorf("lab: %s: sysctl %s: %w", n.Name, key, err)
		}
		return nil
	})
}

// Neigh adds (or replaces) a permanent neighbour entry ip → mac on iface.
func (n *NS) Neigh(iface string, ip netip.Addr, mac net.HardwareAddr) error {
	name, err := n.ifname(iface)
	if err != nil {
		return err
	}
	link, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", n.Name, err)
	}
	ip = ip.Unmap()
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	err = n.nl.NeighSet(&netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       fam,
		State:        netlink.NUD_PERMANENT,
		IP:           ip.AsSlice(),
		HardwareAddr: mac,
	})
	if err != nil {
		return fmt.Errorf("lab: %s: neighbour %v → %v on %s: %w", n.Name, ip, mac, name, err)
	}
	return nil
}

// ListenTCP listens on addr ("10.0.0.2:80", "[fd00::2]:80", ":0") inside the
// namespace. The listener is closed at cleanup if still open.
func (n *NS) ListenTCP(addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", n.Name, err)
	}
	if err := n.lab.track(ln); err != nil {
		return nil, err
	}
	return ln, nil
}

// DialTCP connects to addr from inside the namespace. addr should hold an IP
// literal: a host name would be resolved by the resolver of the process's
// own namespace. The connection (a *net.TCPConn) is closed at cleanup if
// still open.
func (n *NS) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	var c net.Conn
	err := n.Do(func() (err error) {
		// No Happy Eyeballs: its fallback dial would run on another thread,
		// outside the namespace.
		d := net.Dialer{FallbackDelay: -1}
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", n.Name, err)
	}
	if err := n.lab.track(c); err != nil {
		return nil, err
	}
	return c, nil
}

// killNSProcs SIGKILLs every process (but this one) whose network namespace
// is the one mounted at path, and waits briefly for them to go.
func killNSProcs(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("lab: %s: %w", path, err)
	}
	find := func() []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		self := os.Getpid()
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			var ps unix.Stat_t
			if unix.Stat("/proc/"+e.Name()+"/ns/net", &ps) == nil && ps.Ino == st.Ino && ps.Dev == st.Dev {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: processes %v still in %s", pids, path)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// EchoTCP runs an echo server of the namespace's kernel TCP on addr until
// the test ends: each connection gets back what it sends, then the
// server's FIN after the client's.
func (n *NS) EchoTCP(tb testing.TB, addr string) {
	tb.Helper()
	ln, err := n.ListenTCP(addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	ServeEcho(ln)
}

// ServeEcho echoes every connection accepted on ln, on goroutines of its
// own, until ln closes: what a connection sends comes back, then a FIN
// after the client's.
func ServeEcho(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				if tc, ok := c.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}()
		}
	}()
}
