package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command returns a command that runs name inside the namespace, through
// `ip netns exec` (which also gives it a /sys of the namespace). The command
// is the leader of a new process group; cancelling ctx SIGKILLs the group.
// (No Pdeathsig: it fires when the forking OS thread exits, which a locked
// goroutine elsewhere in the process can cause at any time; the processes of
// a lab whose owner died are killed by the next New instead.) name is
// resolved on PATH and the sbin directories first; when it is missing, the
// command's Start fails with an error wrapping ErrToolMissing.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if ctx == nil {
		ctx = context.Background()
	}
	ip, ipErr := LookTool("ip")
	if ipErr != nil {
		ip = "ip"
	}
	path, err := LookTool(name)
	if err != nil {
		path = name
	}
	cmd := exec.CommandContext(ctx, ip, append([]string{"netns", "exec", n.Name, path}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	switch {
	case ipErr != nil:
		cmd.Err = ipErr
	case err != nil:
		cmd.Err = err
	case n.open() != nil:
		cmd.Err = ErrClosed
	}
	return cmd
}

// Run runs name inside the namespace and returns its combined output. The
// error includes the command line and the output.
func (n *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := n.Command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: %s: %s: %w\n%s", n.Name, strings.Join(append([]string{name}, args...), " "), err, tail(out, 4000))
	}
	return string(out), nil
}

// Proc is a background process started with NS.Start.
type Proc struct {
	// Cmd is the running command (its Path is `ip`, which execs the
	// program). Do not call its Wait: use Proc.Wait.
	Cmd *exec.Cmd

	lab  *Lab
	name string
	out  *syncBuffer
	done chan struct{}
	err  error // Wait's result, set before done is closed

	pipe     *os.File // read end of stdout/stderr
	readDone chan struct{}

	mu       sync.Mutex
	stopping bool
}

// Start starts name in the background inside the namespace, its stdout and
// stderr collected (Output). It runs until it exits, ctx is cancelled,
// Stop is called, or the lab closes, which stops its process group (SIGTERM,
// then SIGKILL after a grace period) and then any process left in the
// namespace.
func (n *NS) Start(ctx context.Context, name string, args ...string) (*Proc, error) {
	return n.start(n.Command(ctx, name, args...), name)
}

// start is Start for a command made by Command and then adjusted
// (environment, extra files).
func (n *NS) start(cmd *exec.Cmd, name string) (*Proc, error) {
	p := &Proc{Cmd: cmd, lab: n.lab, name: name, out: &syncBuffer{}, done: make(chan struct{}), readDone: make(chan struct{})}
	// Our own pipe rather than exec's: exec's Wait would wait for every
	// descendant holding the pipe (a daemon's children) to exit.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	l := n.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		pr.Close()
		pw.Close()
		return nil, ErrClosed
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("lab: %s: starting %s: %w", n.Name, name, err)
	}
	p.pipe = pr
	l.procs[p] = struct{}{}
	go func() {
		io.Copy(p.out, pr)
		close(p.readDone)
	}()
	go func() {
		p.err = cmd.Wait()
		// Collect what it wrote before exiting; a descendant may keep the
		// pipe open longer, so do not wait for EOF.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-p.readDone:
		case <-t.C:
		}
		t.Stop()
		close(p.done)
		l.mu.Lock()
		if l.procs != nil {
			delete(l.procs, p)
		} else {
			pr.Close() // the lab has closed: nothing else will
		}
		l.mu.Unlock()
	}()
	return p, nil
}

// Pid returns the process id (also its process group id).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited and its output is collected.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns the result of exec's Wait.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Output returns what the process has written to stdout and stderr so far
// (the last MiB of it).
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process (not its group), unless it has exited.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.Cmd.Process.Signal(sig)
}

// Stop sends SIGTERM to the process group, then SIGKILL if the process has
// not exited after grace, and waits. It returns nil when the process exited
// because of those signals or with status 0; otherwise the exit error,
// with the end of its output.
func (p *Proc) Stop(grace time.Duration) error { return p.stop(grace) }

func (p *Proc) stop(grace time.Duration) error {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return p.result()
	default:
	}
	p.stopping = true
	// The leader is not reaped before done is closed, so the group id is
	// still ours.
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	p.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("lab: %s (pid %d) did not exit 10s after SIGKILL", p.name, p.Pid())
		}
	}
	return p.result()
}

func (p *Proc) result() error {
	<-p.done
	if p.err == nil {
		return nil
	}
	p.mu.Lock()
	stopping := p.stopping
	p.mu.Unlock()
	var ee *exec.ExitError
	if stopping && errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	if errors.As(p.err, &ee) {
		return fmt.Errorf("lab: %s: %w\n%s", p.name, p.err, tail([]byte(p.Output()), 2000))
	}
	return fmt.Errorf("lab: %s: %w", p.name, p.err)
}

// syncBuffer is a goroutine-safe buffer that keeps the last outMax bytes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

const outMax = 1 << 20

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(b)
	if s.b.Len() > 2*outMax {
		keep := s.b.Bytes()[s.b.Len()-outMax:]
		nb := make([]byte, len(keep), 2*outMax)
		copy(nb, keep)
		s.b = *bytes.NewBuffer(nb)
	}
	return len(b), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > outMax {
		b = b[len(b)-outMax:]
	}
	return string(b)
}

// SS returns the output of `ss -tan` in the namespace (TCP sockets, all
// states, numeric).
func (n *NS) SS() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return n.Run(ctx, "ss", "-tan")
}

// settle waits until file's size has not changed for quiet, at most max.
func settle(file string, quiet, max time.Duration) {
	end := time.Now().Add(max)
	last, since := int64(-1), time.Now()
	for time.Now().Before(end) {
		var size int64
		if fi, err := os.Stat(file); err == nil {
			size = fi.Size()
		}
		if size != last {
			last, since = size, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Capture records the packets of iface (full or short name, or "any")
// matching the pcap filter (may be empty) to the pcap file, with tcpdump,
// which it installs if missing (EnsureTools). It returns once tcpdump is
// capturing. stop ends the capture and flushes the file; the lab also stops
// it at cleanup.
func (n *NS) Capture(ctx context.Context, iface, filter, file string) (stop func() error, err error) {
	if err := EnsureTools("tcpdump"); err != nil {
		return nil, err
	}
	name := iface
	if iface != "any" {
		if name, err = n.ifname(iface); err != nil {
			return nil, err
		}
	}
	// -Z root: tcpdump would otherwise drop to its own user and fail to
	// write into a root-only directory such as t.TempDir().
	// --immediate-mode: with TPACKET_V3 blocks, packets can sit in a
	// half-full block and be lost when tcpdump exits.
	args := []string{"-i", name, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", file}
	if filter != "" {
		args = append(args, filter)
	}
	p, err := n.Start(ctx, "tcpdump", args...)
	if err != nil {
		return nil, err
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.Output(), "listening on") {
		select {
		case <-p.Done():
			return nil, fmt.Errorf("lab: %s: tcpdump exited: %v\n%s", n.Name, p.Wait(), tail([]byte(p.Output()), 2000))
		case <-deadline.C:
			p.Stop(0)
			return nil, fmt.Errorf("lab: %s: tcpdump did not start capturing within 10s\n%s", n.Name, tail([]byte(p.Output()), 2000))
		case <-tick.C:
		}
	}
	var once sync.Once
	var serr error
	return func() error {
		once.Do(func() {
			// tcpdump exits on SIGTERM without draining what the kernel
			// still holds for it: first let the file stop growing (a
			// loaded machine can be a few hundred ms behind).
			settle(file, 150*time.Millisecond, 3*time.Second)
			// SIGTERM (not SIGINT, which a background job may inherit as
			// ignored) makes tcpdump flush the file and exit.
			serr = p.stop(5 * time.Second)
		})
		return serr
	}, nil
}
