// Package statedir keeps what xdproxy must remember across restarts, in its
// state directory (config state_dir, default /var/lib/xdproxy).
//
// Today that is the engine's keys: the keys of the ISN function, of the
// timestamp offsets and of the SYN cookies (stack.Keys). With the same keys
// and a clock that does not restart with the process, a restarted daemon's
// SYN to a 4-tuple its predecessor used is newer, by sequence number and by
// timestamp, than the old connection a peer may still hold in TIME_WAIT,
// so the peer reopens the 4-tuple (RFC 6191) instead of answering with the
// old connection's ACK.
//
// The keys live in the file "keys", three lines of hex ("isn ...",
// "timestamp ...", "cookie ..."), mode 0600 in a directory of mode 0700. It
// is created once, atomically (written aside, then linked into place, so
// two daemons starting at once agree on one file), and never rewritten.
// Deleting it makes the next start draw new keys, as a reboot does.
package statedir

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/xdproxy/xdproxy/stack"
)

// KeysFile is the name of the keys file in the state directory.
const KeysFile = "keys"

// Dir is an open state directory.
type Dir struct{ path string }

// Open makes sure dir exists (creating it, mode 0700, with its parents)
// and is a directory this process can write.
func Open(dir string) (*Dir, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("state_dir %q: not an absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return nil, fmt.Errorf("state_dir %s: not writable: %w", dir, err)
	}
	return &Dir{path: dir}, nil
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// Keys returns the engine's keys, creating them on the first start.
func (d *Dir) Keys() (*stack.Keys, error) {
	file := filepath.Join(d.path, KeysFile)
	k, err := readKeys(file)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	var raw [48]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("state_dir: new keys: %w", err)
	}
	tmp, err := os.CreateTemp(d.path, ".keys-*")
	if err != nil {
		return nil, fmt.Errorf("state_dir: new keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	fmt.Fprintf(tmp, "isn %s\ntimestamp %s\ncookie %s\n",
		hex.EncodeToString(raw[0:16]), hex.EncodeToString(raw[16:32]), hex.EncodeToString(raw[32:48]))
	if err := errors.Join(tmp.Chmod(0o600), tmp.Sync(), tmp.Close()); err != nil {
		return nil, fmt.Errorf("state_dir: new keys: %w", err)
	}
	// Link, not rename: if another daemon got there first, its file stays
	// and both use it.
	if err := os.Link(tmp.Name(), file); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("state_dir: new keys: %w", err)
	}
	return readKeys(file)
}

// readKeys reads and checks a keys file.
func readKeys(file string) (*stack.Keys, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("state_dir: %s is not a regular file", file)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("state_dir: %s is readable by others (mode %04o): the keys make sequence numbers and SYN cookies predictable; chmod 600 it", file, st.Mode().Perm())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	k := &stack.Keys{}
	want := map[string]*[2]uint64{"isn": &k.ISN, "timestamp": &k.Timestamp, "cookie": &k.Cookie}
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		name, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		dst := want[name]
		b, err := hex.DecodeString(strings.TrimSpace(val))
		if dst == nil || err != nil || len(b) != 16 {
			return nil, fmt.Errorf("state_dir: %s:%d: want \"isn|timestamp|cookie <32 hex digits>\"; delete the file to draw new keys", file, i+1)
		}
		dst[0], dst[1] = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
		delete(want, name)
	}
	if len(want) != 0 {
		return nil, fmt.Errorf("state_dir: %s: %d of the 3 keys missing; delete the file to draw new keys", file, len(want))
	}
	return k, nil
}

// Check reports, without changing anything, why dir could not serve as the
// state directory: an existing path that is not a directory or not
// writable, or a missing one whose nearest existing parent is not writable
// (so it cannot be created), or a keys file that is not valid.
func Check(dir string) error {
	p := dir
	for {
		st, err := os.Stat(p)
		switch {
		case err == nil && !st.IsDir():
			return fmt.Errorf("%s is not a directory", p)
		case err == nil:
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
				if p == dir {
					return fmt.Errorf("%s is not writable by this user", dir)
				}
				return fmt.Errorf("%s does not exist and cannot be created: %s is not writable by this user", dir, p)
			}
			if p == dir {
				if _, err := readKeys(filepath.Join(dir, KeysFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			return nil
		case errors.Is(err, fs.ErrNotExist):
			parent := filepath.Dir(p)
			if parent == p {
				return fmt.Errorf("%s: no existing parent", dir)
			}
			p = parent
		default:
			return err
		}
	}
}
