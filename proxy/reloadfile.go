package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xdproxy/xdproxy/internal/config"
	"github.com/xdproxy/xdproxy/internal/preflight"
	"github.com/xdproxy/xdproxy/proxy/admin"
)

// FileReloader re-reads the configuration file the daemon runs from and
// applies it (admin.Reloader; SIGHUP and POST /reload both go through it):
// the file is validated exactly as `xdproxy check` validates it (the file,
// then the host unless preflight is off); a file with problems is refused,
// each problem one FILE:LINE line, logged, and the running configuration
// stays. One reload at a time.
type FileReloader struct {
	path      string
	preflight bool
	p         *Proxy
	started   *config.Config // the file the daemon started with (what only a restart changes)
	log       *slog.Logger

	mu               sync.Mutex
	also             []func(*config.Config) ([]string, error) // AlsoApply
	applied, refused atomic.Uint64
	sum              atomic.Pointer[string]
}

// NewFileReloader reloads path into p; cfg is the file p was started from
// and data its bytes (for the hash /metrics shows).
func NewFileReloader(p *Proxy, path string, cfg *config.Config, data []byte, preflight bool, log *slog.Logger) *FileReloader {
	r := &FileReloader{path: path, preflight: preflight, p: p, started: cfg, log: log}
	sum := fileSum(data)
	r.sum.Store(&sum)
	return r
}

// AlsoApply makes every applied reload call fn with the new file, after
// the proxy took it (the BGP speaker's neighbors and routes); what fn
// changed joins the outcome's Changed, and an error its Error (the reload
// stays applied: the proxy already runs the new file).
func (r *FileReloader) AlsoApply(fn func(*config.Config) (changed []string, err error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.also = append(r.also, fn)
}

func fileSum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// ReloadStats implements admin.Reloader.
func (r *FileReloader) ReloadStats() (applied, refused uint64, sha256 string) {
	return r.applied.Load(), r.refused.Load(), *r.sum.Load()
}

// Reload implements admin.Reloader.
func (r *FileReloader) Reload(origin string) admin.ReloadOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	out := r.reload()
	out.Took = time.Since(start).Round(time.Microsecond).String()
	if out.Applied {
		r.applied.Add(1)
		r.log.Info("reload applied", "by", origin, "took", out.Took, "sha256", out.SHA256,
			"added", out.Added, "removed", out.Removed, "changed", out.Changed, "take_a_restart", out.Restart)
	} else {
		r.refused.Add(1)
		r.log.Warn("reload refused: the running configuration stays", "by", origin, "err", out.Error, "problems", len(out.Problems))
		for _, line := range out.Problems {
			r.log.Warn("reload refused", "problem", line)
		}
	}
	return out
}

func (r *FileReloader) reload() admin.ReloadOutcome {
	var out admin.ReloadOutcome
	data, err := os.ReadFile(r.path)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	cfg, err := config.Parse(r.path, data)
	if err == nil && r.preflight {
		err = preflight.Check(r.path, cfg, preflight.Host())
	}
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			for _, e := range *errs {
				out.Problems = append(out.Problems, e.Error())
			}
		} else {
			out.Error = err.Error()
		}
		return out
	}
	pcfg, err := FromConfig(cfg, r.log)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	// What the engine template holds besides the file (the keys) is the
	// running one's.
	pcfg.Engine.Keys = r.p.cfg.Engine.Keys
	res, err := r.p.Reload(pcfg)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Applied = true
	out.Added, out.Removed, out.Changed, out.Restart = res.Added, res.Removed, res.Changed, res.Restart
	for _, fn := range r.also {
		changed, err := fn(cfg)
		out.Changed = append(out.Changed, changed...)
		if err != nil {
			out.Error = err.Error()
		}
	}
	if !reflect.DeepEqual(cfg.Admin, r.started.Admin) {
		out.Restart = append(out.Restart, "admin")
	}
	if cfg.Log != r.started.Log {
		out.Restart = append(out.Restart, "log")
	}
	if cfg.DrainTimeout != r.started.DrainTimeout {
		out.Restart = append(out.Restart, "drain_timeout")
	}
	sum := fileSum(data)
	r.sum.Store(&sum)
	out.SHA256 = sum
	return out
}
