package adminclient

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/xdproxy/xdproxy/proxy/admin"
)

// WriteBackends prints the backends as a table, one line each:
//
//	LISTENER  BACKEND         STATE  WEIGHT        HEALTH  ACTIVE  SESSIONS  FAILURES  CHECKS
//	web       10.10.2.2:8080  drain  1             up      3       120       0         52/0
//	web       10.10.2.3:8080  ready  0 (config 2)  up      0       118       0         52/0
//
// WEIGHT is the current weight, with the configured one when they differ;
// CHECKS is active health check results ok/failed ("-": none configured;
// in maint they stop, and HEALTH is as they last left it).
func WriteBackends(w io.Writer, doc admin.BackendsDoc) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTENER\tBACKEND\tSTATE\tWEIGHT\tHEALTH\tACTIVE\tSESSIONS\tFAILURES\tCHECKS")
	for _, l := range doc.Listeners {
		for _, b := range l.Backends {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", l.Name, b.Address, b.State, weight(b), b.Health,
				b.ActiveSessions, b.SessionsTotal, b.FailuresTotal, checks(b))
		}
	}
	return tw.Flush()
}

// WriteBackend prints one backend after a change, one line:
//
//	web 10.10.2.2:8080: state drain, weight 1, health up, 3 active sessions
func WriteBackend(w io.Writer, doc admin.SetBackendDoc) error {
	b := doc.Backend
	_, err := fmt.Fprintf(w, "%s %s: state %s, weight %s, health %s, %d active sessions\n",
		doc.Listener, b.Address, b.State, weight(b), b.Health, b.ActiveSessions)
	return err
}

func weight(b admin.BackendDoc) string {
	if b.Weight == b.ConfiguredWeight {
		return strconv.Itoa(b.Weight)
	}
	return fmt.Sprintf("%d (config %d)", b.Weight, b.ConfiguredWeight)
}

func checks(b admin.BackendDoc) string {
	if b.Checks == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", b.Checks.OK, b.Checks.Failed)
}

// FormatReload renders a reload's outcome for a terminal: "applied ..." on
// one line, or the problems of a refused file, one per line.
func FormatReload(o admin.ReloadOutcome) string {
	if !o.Applied {
		if len(o.Problems) > 0 {
			return strings.Join(o.Problems, "\n")
		}
		return "refused: " + o.Error
	}
	s := fmt.Sprintf("applied in %s (sha256 %s)", o.Took, o.SHA256)
	for _, x := range []struct {
		what  string
		names []string
	}{{"added", o.Added}, {"removed", o.Removed}, {"changed", o.Changed}, {"take a restart", o.Restart}} {
		if len(x.names) > 0 {
			s += fmt.Sprintf("; %s: %s", x.what, strings.Join(x.names, ", "))
		}
	}
	return s
}
