package admin

import "net/http"

// Reloader re-reads the configuration file and applies it (POST /reload,
// and SIGHUP, which the daemon routes to the same Reloader).
type Reloader interface {
	Reload(origin string) ReloadOutcome
	// ReloadStats are the reloads so far and the SHA-256 of the file in
	// force, for /metrics.
	ReloadStats() (applied, refused uint64, sha256 string)
}

// ReloadOutcome is what a reload did: /reload's JSON answer.
type ReloadOutcome struct {
	Applied bool `json:"applied"`
	// Problems are the check lines (FILE:LINE: field: what is wrong) of a
	// refused file; Error what else went wrong.
	Problems []string `json:"problems,omitempty"`
	Error    string   `json:"error,omitempty"`
	Added    []string `json:"added,omitempty"`
	Removed  []string `json:"removed,omitempty"`
	Changed  []string `json:"changed,omitempty"`
	// Restart names settings that differ in the file but take a restart.
	Restart []string `json:"take_a_restart,omitempty"`
	SHA256  string   `json:"sha256,omitempty"` // of the file now in force
	Took    string   `json:"took"`
}

type reloaderRef struct{ r Reloader }

// SetReloader makes POST /reload call r (nil: /reload answers 503).
func (a *Admin) SetReloader(r Reloader) {
	if r == nil {
		a.reloader.Store(nil)
		return
	}
	a.reloader.Store(&reloaderRef{r})
}

func (a *Admin) currentReloader() Reloader {
	if ref := a.reloader.Load(); ref != nil {
		return ref.r
	}
	return nil
}

// handleReload: POST /reload re-reads the file and applies it; 200 with
// the outcome when applied, 422 with the check lines when refused.
func (a *Admin) handleReload(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	rl := a.currentReloader()
	if rl == nil {
		writeError(w, http.StatusServiceUnavailable, "no configuration file to reload")
		return
	}
	out := rl.Reload("admin " + r.RemoteAddr)
	status := http.StatusOK
	if !out.Applied {
		status = http.StatusUnprocessableEntity
	}
	writeJSON(w, status, out)
}
