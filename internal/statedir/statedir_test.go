package statedir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestKeysCreatedOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "xdproxy")
	if err := Check(dir); err != nil {
		t.Fatalf("Check of a creatable directory: %v", err)
	}
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("state_dir mode %04o, want 0700", st.Mode().Perm())
	}
	k1, err := d.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, KeysFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("keys file mode %04o, want 0600", st.Mode().Perm())
	}
	if k1.ISN == k1.Timestamp || k1.ISN == [2]uint64{} || k1.Cookie == [2]uint64{} {
		t.Errorf("keys look drawn badly: %+v", k1)
	}
	// A restart reads the same keys.
	d2, _ := Open(dir)
	k2, err := d2.Keys()
	if err != nil || *k2 != *k1 {
		t.Fatalf("second start: %+v, %v; want %+v", k2, err, k1)
	}
	if err := Check(dir); err != nil {
		t.Errorf("Check with a keys file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state_dir holds %d entries, want only the keys file", len(entries))
	}
}

// TestKeysConcurrentStarts: daemons starting at once agree on one file.
func TestKeysConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			d, err := Open(dir)
			if err != nil {
				t.Error(err)
				return
			}
			k, err := d.Keys()
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = fmt.Sprint(*k)
		})
	}
	wg.Wait()
	for _, g := range got[1:] {
		if g != got[0] {
			t.Fatalf("concurrent starts drew different keys")
		}
	}
}

func TestKeysRefused(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"readable by others", "isn 000102030405060708090a0b0c0d0e0f\ntimestamp 000102030405060708090a0b0c0d0e0f\ncookie 000102030405060708090a0b0c0d0e0f\n", 0o644, "readable by others"},
		{"a key missing", "isn 000102030405060708090a0b0c0d0e0f\ncookie 000102030405060708090a0b0c0d0e0f\n", 0o600, "1 of the 3 keys missing"},
		{"short key", "isn 0001\ntimestamp 000102030405060708090a0b0c0d0e0f\ncookie 000102030405060708090a0b0c0d0e0f\n", 0o600, "keys:1:"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, KeysFile), []byte(tc.content), tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(dir, KeysFile), tc.mode)
		d, _ := Open(dir)
		if _, err := d.Keys(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Keys() = %v, want an error containing %q", tc.name, err, tc.want)
		}
		if err := Check(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// A file where the directory should be.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if err := Check(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Check(file) = %v", err)
	}
	if err := Check(filepath.Join(f, "sub")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Check(file/sub) = %v", err)
	}
}
