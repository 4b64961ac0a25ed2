package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// LoopbackAddress reports whether an admin address (host:port) can only be
// reached from this host: its host is a loopback IP (127.0.0.0/8, ::1) or
// "localhost". An empty host (every address), any other name and anything
// unparsable are not loopback.
func LoopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// MaxTokenLen bounds a bearer token (the file may hold a trailing newline
// and surrounding spaces besides).
const MaxTokenLen = 4096

// ReadTokenFile reads an admin token file (admin.token_file): a regular
// file that neither group nor others may read or write (mode 0600 or
// stricter, as ssh asks of a private key), holding one token of printable
// ASCII without spaces, with surrounding white space (a trailing newline)
// trimmed. Its errors say what to do, without the token.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s is open to group or others (mode %04o); the token is a secret: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenLen+1024))
	if err != nil {
		return "", fmt.Errorf("cannot read the token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	switch {
	case token == "":
		return "", fmt.Errorf("%s is empty; put a token in it (e.g. head -c 32 /dev/urandom | base64 > %s)", path, path)
	case len(token) > MaxTokenLen:
		return "", fmt.Errorf("%s holds more than %d bytes; a token is one line", path, MaxTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return "", errors.New(path + " must hold one token: printable ASCII without spaces or line breaks")
		}
	}
	return token, nil
}
