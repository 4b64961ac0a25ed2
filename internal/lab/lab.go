package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	// stateDir holds one reservation file per live lab ("<prefix>.pid"),
	// and the apt lock. /run is a tmpfs: it empties at boot.
	stateDir = "/run/xdproxy-lab"
	// netnsDir is where named namespaces live, as for `ip netns`.
	netnsDir = "/run/netns"
	// ifNameMax is IFNAMSIZ-1.
	ifNameMax = 15
	// procGrace is how long Close lets a started process handle SIGTERM.
	procGrace = 2 * time.Second
)

// ErrClosed is returned by the methods of a lab that has been closed.
var ErrClosed = errors.New("lab: closed")

// Lab is a set of network namespaces, veth pairs, firewall rules, processes
// and sockets that are removed together by Close. Its methods are safe for
// concurrent use.
type Lab struct {
	prefix  string
	resFile string

	mu      sync.Mutex
	closed  bool
	nss     []*NS
	byName  map[string]*NS
	links   []*Veth
	procs   map[*Proc]struct{}
	undos   map[*undoEntry]struct{}
	sockets []io.Closer
	pruneAt int
	wans    []*WAN // closed first, so that they stop gracefully
	wanN    int    // WANs begun, for their namespaces' names
}

type undoEntry struct {
	what string
	fn   func() error
}

// process-wide set of prefixes in use, so that two labs of one process
// cannot pick the same one between reservation and check.
var (
	prefixMu sync.Mutex
	prefixes = map[string]bool{}
)

// New creates an empty lab with a fresh name prefix. With tb != nil, Close is
// registered with tb.Cleanup and a cleanup error fails the test. New first
// reaps the leftovers of labs whose owning process has died.
func New(tb testing.TB) (*Lab, error) {
	if tb != nil {
		tb.Helper()
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (network namespaces, veth, iptables); see RequireRoot")
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if err := ensureNetnsDir(); err != nil {
		return nil, err
	}
	if err := EnsureTools("ip"); err != nil { // NS.Command runs `ip netns exec`
		return nil, err
	}
	_ = ReapStale()

	l := &Lab{
		byName: map[string]*NS{},
		procs:  map[*Proc]struct{}{},
		undos:  map[*undoEntry]struct{}{},
	}
	if err := l.reserve(); err != nil {
		return nil, err
	}
	if tb != nil {
		tb.Cleanup(func() {
			if err := l.Close(); err != nil {
				tb.Errorf("lab %s cleanup: %v", l.prefix, err)
			}
		})
	}
	return l, nil
}

// Prefix returns the prefix of every name the lab creates, e.g. "xdp3f2a-".
func (l *Lab) Prefix() string { return l.prefix }

// reserve picks a prefix that no live lab (of any process) holds and that
// no existing namespace or root-namespace interface starts with, and
// records it in stateDir.
func (l *Lab) reserve() error {
	var b [2]byte
	for range 200 {
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		p := "xdp" + hex.EncodeToString(b[:]) + "-"
		prefixMu.Lock()
		taken := prefixes[p]
		if !taken {
			prefixes[p] = true
		}
		prefixMu.Unlock()
		if taken {
			continue
		}
		res := filepath.Join(stateDir, p+"pid")
		if err := writeExclusive(res, ownerRecord()); err != nil {
			releasePrefix(p)
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return fmt.Errorf("lab: reserving prefix: %w", err)
		}
		if inUse(p) {
			os.Remove(res)
			releasePrefix(p)
			continue
		}
		l.prefix, l.resFile = p, res
		return nil
	}
	return errors.New("lab: could not find a free name prefix")
}

func releasePrefix(p string) {
	prefixMu.Lock()
	delete(prefixes, p)
	prefixMu.Unlock()
}

// inUse reports whether some namespace or root-namespace link already
// carries the prefix (left by something other than a lab).
func inUse(p string) bool {
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), p) {
				return true
			}
		}
	}
	names, _ := rootLinkNames()
	for _, n := range names {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// writeExclusive creates path with content atomically: it fails with
// os.ErrExist when path exists, and readers never see a partial file.
func writeExclusive(path, content string) error {
	tmp := fmt.Sprintf("%s.tmp.%d", path, os.Getpid())
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Link(tmp, path)
}

// ownerRecord identifies this process: pid and start time (against pid
// reuse).
func ownerRecord() string {
	pid := os.Getpid()
	return fmt.Sprintf("%d %s\n", pid, procStart(pid))
}

// procStart returns field 22 (starttime) of /proc/pid/stat, or "" when the
// process does not exist.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// ReapStale removes what labs left behind when their process died without
// cleaning up (SIGKILL, a test binary's timeout): their namespaces, the
// processes inside them, and their reservation files. New calls it; it is
// exported for the demo's "clean" step.
func ReapStale() error {
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(stateDir, name)
		if i := strings.Index(name, ".tmp."); i >= 0 {
			if pid, err := strconv.Atoi(name[i+5:]); err == nil && procStart(pid) == "" {
				os.Remove(path)
			}
			continue
		}
		p, ok := strings.CutSuffix(name, "pid")
		if !ok || !strings.HasSuffix(p, "-") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var pid int
		var start string
		if n, _ := fmt.Sscanf(string(b), "%d %s", &pid, &start); n != 2 {
			continue
		}
		if procStart(pid) == start {
			continue // alive
		}
		if err := reapPrefix(p); err != nil {
			errs = append(errs, err)
			continue
		}
		os.Remove(path)
	}
	return errors.Join(errs...)
}

func reapPrefix(p string) error {
	var errs []error
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), p) {
				continue
			}
			path := filepath.Join(netnsDir, e.Name())
			if err := killNSProcs(path); err != nil {
				errs = append(errs, err)
			}
			if err := netns.DeleteNamed(e.Name()); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("lab: deleting namespace %s: %w", e.Name(), err))
			}
		}
	}
	if h, err := rootHandle(); err == nil {
		defer h.Close()
		if links, err := linkList(h); err == nil {
			for _, ln := range links {
				if strings.HasPrefix(ln.Attrs().Name, p) {
					if err := h.LinkDel(ln); err != nil {
						errs = append(errs, fmt.Errorf("lab: deleting link %s: %w", ln.Attrs().Name, err))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// rootHandle returns a netlink handle in this process's network namespace
// (that of its main thread), whatever namespace the calling thread is in.
func rootHandle() (*netlink.Handle, error) {
	h, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func rootLinkNames() ([]string, error) {
	h, err := rootHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := linkList(h)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(links))
	for i, ln := range links {
		names[i] = ln.Attrs().Name
	}
	return names, nil
}

// linkList is h.LinkList, retried when a concurrent change interrupts the
// dump.
func linkList(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 10 {
		var links []netlink.Link
		if links, err = h.LinkList(); err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, err
}

// Close removes everything the lab created, in order: WAN emulators (told
// to stop), started processes (SIGTERM, then SIGKILL after a grace period;
// their exit statuses are not reported), any other process inside a lab
// namespace, the sockets from ListenTCP/DialTCP, the Loss rules, the veth
// pairs, the namespaces. It is idempotent; later calls return nil, and the
// lab's methods return ErrClosed. If some step fails, the lab's reservation
// stays, so that a later ReapStale, in another process, retries.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	undos := make([]*undoEntry, 0, len(l.undos))
	for u := range l.undos {
		undos = append(undos, u)
	}
	sockets, links, nss, wans := l.sockets, l.links, l.nss, l.wans
	l.procs, l.undos, l.sockets, l.links = nil, nil, nil, nil
	l.mu.Unlock()

	var errs []error
	for _, w := range wans {
		if err := w.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, p := range procs {
		wg.Go(func() {
			// Exit statuses do not matter here (many servers exit non-zero
			// on SIGTERM); Proc.Stop reports them to those who care.
			var ee *exec.ExitError
			if err := p.stop(procGrace); err != nil && !errors.As(err, &ee) {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, n := range nss {
		if err := killNSProcs(n.Path()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		p.pipe.Close() // ends the output reader even if something outside holds the pipe
	}
	for _, s := range sockets {
		s.Close() // already closed by the test, most of the time
	}
	for _, u := range undos {
		if err := u.fn(); err != nil {
			errs = append(errs, fmt.Errorf("lab: removing %s: %w", u.what, err))
		}
	}
	for _, v := range links {
		if err := v.A.NS.nl.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: v.A.Index}}); err != nil &&
			!isNotFound(err) {
			errs = append(errs, fmt.Errorf("lab: deleting veth %s: %w", v.A.Name, err))
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := nss[i].destroy(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(l.resFile)
		releasePrefix(l.prefix)
	} // else keep the reservation: a later ReapStale retries.
	return errors.Join(errs...)
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, os.ErrNotExist) ||
		strings.Contains(err.Error(), "no such device") || strings.Contains(err.Error(), "not found")
}

// track registers a socket to close at cleanup. Closed ones are pruned from
// time to time so that long benchmarks do not accumulate them.
func (l *Lab) track(c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return ErrClosed
	}
	l.sockets = append(l.sockets, c)
	if len(l.sockets) >= l.pruneAt {
		live := l.sockets[:0]
		for _, s := range l.sockets {
			if isClosedSocket(s) {
				continue
			}
			live = append(live, s)
		}
		clear(l.sockets[len(live):])
		l.sockets = live
		l.pruneAt = 2*len(live) + 64
	}
	return nil
}

// isClosedSocket reports whether a *net.TCPConn or *net.TCPListener has been
// closed.
func isClosedSocket(c io.Closer) bool {
	var rc interface{ Control(func(uintptr)) error }
	var err error
	switch s := c.(type) {
	case *net.TCPConn:
		rc, err = s.SyscallConn()
	case *net.TCPListener:
		rc, err = s.SyscallConn()
	default:
		return false
	}
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}
