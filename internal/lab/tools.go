package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ErrToolMissing is wrapped by the errors returned when a program the lab
// needs is not installed and could not be installed.
var ErrToolMissing = errors.New("tool missing")

// debianPackage maps the programs the lab, the tests and the demo run to the
// Debian package that ships them. A name not listed is taken to be its own
// package.
var debianPackage = map[string]string{
	"ip":              "iproute2",
	"ss":              "iproute2",
	"tc":              "iproute2",
	"iptables":        "iptables",
	"ip6tables":       "iptables",
	"ethtool":         "ethtool",
	"tcpdump":         "tcpdump",
	"tshark":          "tshark",
	"ping":            "iputils-ping",
	"sysctl":          "procps",
	"curl":            "curl",
	"iperf3":          "iperf3",
	"nc":              "netcat-openbsd",
	"socat":           "socat",
	"wrk":             "wrk",
	"redis-server":    "redis-server",
	"redis-benchmark": "redis-tools",
	"redis-cli":       "redis-tools",
	"nginx":           "nginx",
	"haproxy":         "haproxy",
	"bird":            "bird2",
}

// sbinDirs are searched after PATH: a root shell may have a PATH without
// them (iptables, ethtool and tcpdump live in /usr/sbin on Debian).
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// LookTool returns the path of the program name, searching PATH and then the
// sbin directories.
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if !strings.Contains(name, "/") {
		for _, d := range sbinDirs {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("lab: %q not found in PATH or %s (Debian package %s): %w",
		name, strings.Join(sbinDirs, ":"), packageOf(name), ErrToolMissing)
}

func packageOf(name string) string {
	if p, ok := debianPackage[name]; ok {
		return p
	}
	return name
}

var (
	ensureMu   sync.Mutex
	aptUpdated bool
)

// EnsureTools makes sure the named programs are installed. Each name is a
// program ("iptables") or "program:package" ("nc:netcat-openbsd") when the
// package is not the built-in guess. Missing ones are installed with
// apt-get (one `apt-get update` per process, on the first failure) when
// running as root; otherwise the error names the packages to install. The
// error wraps ErrToolMissing.
func EnsureTools(names ...string) error {
	ensureMu.Lock()
	defer ensureMu.Unlock()

	missing := func() (cmds, pkgs []string) {
		seen := map[string]bool{}
		for _, n := range names {
			cmd, pkg, ok := strings.Cut(n, ":")
			if !ok {
				pkg = packageOf(cmd)
			}
			if _, err := LookTool(cmd); err != nil {
				cmds = append(cmds, cmd)
				if !seen[pkg] {
					seen[pkg] = true
					pkgs = append(pkgs, pkg)
				}
			}
		}
		return cmds, pkgs
	}
	cmds, pkgs := missing()
	if len(cmds) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: missing %s; not root, so not installing: run `apt-get install %s` as root: %w",
			strings.Join(cmds, ", "), strings.Join(pkgs, " "), ErrToolMissing)
	}
	apt, err := LookTool("apt-get")
	if err != nil {
		return fmt.Errorf("lab: missing %s and no apt-get to install Debian packages %s: %w",
			strings.Join(cmds, ", "), strings.Join(pkgs, " "), ErrToolMissing)
	}

	// Serialize with other test binaries of the same `go test` run; apt
	// itself would also wait for its lock (DPkg::Lock::Timeout below).
	if err := os.MkdirAll(stateDir, 0o755); err == nil {
		if f, err := os.OpenFile(filepath.Join(stateDir, "apt.lock"), os.O_CREATE|os.O_RDWR, 0o644); err == nil {
			defer f.Close()
			_ = unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if cmds, pkgs = missing(); len(cmds) == 0 {
				return nil
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, apt, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(out, 2000))
		}
		return nil
	}
	install := append([]string{"install", "-y", "-qq", "--no-install-recommends",
		"-o", "DPkg::Lock::Timeout=300"}, pkgs...)
	err = run(install...)
	if err != nil && !aptUpdated {
		// The package lists may be missing or stale: refresh once and retry.
		if uerr := run("update", "-qq", "-o", "DPkg::Lock::Timeout=300"); uerr != nil {
			err = errors.Join(err, uerr)
		} else {
			aptUpdated = true
			err = run(install...)
		}
	}
	if err != nil {
		return fmt.Errorf("lab: installing %s for %s: %w (%w)",
			strings.Join(pkgs, " "), strings.Join(cmds, ", "), err, ErrToolMissing)
	}
	if cmds, pkgs = missing(); len(cmds) != 0 {
		return fmt.Errorf("lab: installed %s but %s still not found: %w",
			strings.Join(pkgs, " "), strings.Join(cmds, ", "), ErrToolMissing)
	}
	return nil
}

// RequireRoot skips the test when not running as root, except under CI=true,
// where a skipped lab test would hide a failure, so it fails the test.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const why = "needs root (network namespaces, veth, iptables)"
	if os.Getenv("CI") == "true" {
		tb.Fatal("lab: " + why + "; CI=true, so this is a failure, not a skip")
	}
	tb.Skip("lab: " + why)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
