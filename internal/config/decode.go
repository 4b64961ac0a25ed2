package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder walks the YAML node tree, filling a Config and collecting every
// problem with the line it is on.
type decoder struct {
	file  string
	errs  Errors
	lines map[string]int // Config.Lines
}

func (d *decoder) add(line int, field, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// parserProblems are the messages of yaml.v3's parser (parserc.go), whose
// line numbers it reports one too low; the scanner's are right.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found undefined tag handle":             true,
	"found duplicate %YAML directive":        true,
	"found duplicate %TAG directive":         true,
	"found incompatible YAML document":       true,
}

var unquotedIPv6RE = regexp.MustCompile(`^[\s-]*([A-Za-z_]+):\s*(\[[0-9A-Fa-f:.%]+\]:[0-9]+)\s*(#.*)?$`)

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax records a YAML parse error. yaml.v3 reports most of them as
// "yaml: line N: problem" and a few (those on the first line, unknown
// anchors) without a line; an unknown anchor goes on the line of its first
// use, the others on line 1.
func (d *decoder) syntax(data []byte, err error) {
	// The commonest cause: an unquoted [IPv6]:port, which YAML reads as the
	// start of a flow list. Name those lines instead of the parser's puzzle.
	found := false
	for i, line := range strings.Split(string(data), "\n") {
		if m := unquotedIPv6RE.FindStringSubmatch(line); m != nil {
			d.add(i+1, "", "quote IPv6 addresses: %s: \"%s\"", m[1], m[2])
			found = true
		}
	}
	if found {
		return
	}
	msg := err.Error()
	line := 1
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if parserProblems[msg] {
			line++ // yaml.v3 reports the parser's (not the scanner's) marks 0-based
		}
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
		if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
			for i, l := range strings.Split(string(data), "\n") {
				if strings.Contains(l, "*"+m[1]) {
					line = i + 1
					break
				}
			}
		}
	}
	d.add(line, "", "invalid YAML: %s", msg)
}

func (d *decoder) parse(data []byte) *Config {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	var root *yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// Empty file (or only comments): reported below as missing sections.
	case err != nil:
		d.syntax(data, err)
		return nil
	default:
		if len(doc.Content) > 0 {
			root = deref(doc.Content[0])
		}
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			d.syntax(data, err)
			return nil
		default:
			d.add(extra.Line, "", "a second YAML document starts here; the file must hold exactly one")
		}
	}
	if root == nil || isNull(root) {
		root = &yaml.Node{Kind: yaml.MappingNode, Line: 1}
	}
	if root.Kind != yaml.MappingNode {
		d.add(root.Line, "", "the configuration must be a mapping (interfaces:, listeners:, ...), got %s", describe(root))
		return nil
	}
	return d.config(root)
}

// deref follows aliases to the anchored node.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// fmtDur renders a duration without Go's trailing zero units (2m, not 2m0s).
func fmtDur(v time.Duration) string {
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// ---- mappings ----

type entry struct{ key, val *yaml.Node }

// mapping is a checked YAML mapping: only known keys, each at most once.
type mapping struct {
	d      *decoder
	node   *yaml.Node
	path   string
	fields map[string]entry
}

// mapping checks that n is a mapping whose keys are all in known, reporting
// unknown and repeated keys, and returns it (nil when n is not a mapping).
func (d *decoder) mapping(n *yaml.Node, path string, known ...string) *mapping {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, "expected a mapping, got %s", describe(n))
		return nil
	}
	m := &mapping{d: d, node: n, path: path, fields: map[string]entry{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, "keys must be plain names, got %s", describe(k))
			continue
		}
		field := join(path, k.Value)
		if k.ShortTag() == "!!merge" {
			d.add(k.Line, path, "merge keys (<<) are not supported")
			continue
		}
		if !contains(known, k.Value) {
			d.add(k.Line, field, "unknown field; %s", suggest(k.Value, known))
			continue
		}
		if prev, dup := m.fields[k.Value]; dup {
			d.add(k.Line, field, "duplicate key (first at line %d)", prev.key.Line)
			continue
		}
		m.fields[k.Value] = entry{k, v}
		if d.lines == nil {
			d.lines = map[string]int{}
		}
		d.lines[field] = v.Line
	}
	return m
}

// get returns the value of key, or nil when the key is absent or null.
func (m *mapping) get(key string) *yaml.Node {
	e, ok := m.fields[key]
	if !ok || isNull(e.val) {
		return nil
	}
	return e.val
}

func (m *mapping) has(key string) bool { _, ok := m.fields[key]; return ok }

func (m *mapping) field(key string) string { return join(m.path, key) }

// required returns the value of key, reporting it as missing (on the
// mapping's line) when absent or null.
func (m *mapping) required(key string) *yaml.Node {
	v := m.get(key)
	if v == nil {
		line := m.node.Line
		if e, ok := m.fields[key]; ok {
			line = e.key.Line
		}
		m.d.add(line, m.field(key), "required field is missing")
	}
	return v
}

// scalar returns v's text, reporting v when it is not a scalar.
func (m *mapping) scalar(v *yaml.Node, key, what string) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		m.d.add(v.Line, m.field(key), "expected %s, got %s", what, describe(v))
		return "", false
	}
	return v.Value, true
}

// The typed accessors below leave *dst alone when the key is absent or null
// (so it keeps its default) and report the value when it is invalid. They
// return false only when the value was invalid.

func (m *mapping) enum(key string, dst *string, allowed []string) bool {
	v := m.get(key)
	if v == nil {
		return true
	}
	s, ok := m.scalar(v, key, "one of: "+strings.Join(allowed, ", "))
	if !ok {
		return false
	}
	if !contains(allowed, s) {
		m.d.add(v.Line, m.field(key), "invalid value %q; expected one of: %s", s, strings.Join(allowed, ", "))
		return false
	}
	*dst = s
	return true
}

func (m *mapping) integer(key string, dst *int, lo, hi int) bool {
	v := m.get(key)
	if v == nil {
		return true
	}
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		m.d.add(v.Line, m.field(key), "expected an integer, got %s", describe(v))
		return false
	}
	var n int
	if err := v.Decode(&n); err != nil {
		m.d.add(v.Line, m.field(key), "integer %s is out of range", v.Value)
		return false
	}
	if n < lo || n > hi {
		m.d.add(v.Line, m.field(key), "%s (got %d)", rangeMsg(lo, hi), n)
		return false
	}
	*dst = n
	return true
}

func rangeMsg(lo, hi int) string {
	switch {
	case hi == math.MaxInt:
		return fmt.Sprintf("must be at least %d", lo)
	default:
		return fmt.Sprintf("must be between %d and %d", lo, hi)
	}
}

func (m *mapping) boolean(key string, dst *bool) bool {
	v := m.get(key)
	if v == nil {
		return true
	}
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
		m.d.add(v.Line, m.field(key), "expected true or false, got %s", describe(v))
		return false
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		m.d.add(v.Line, m.field(key), "expected true or false, got %s", describe(v))
		return false
	}
	*dst = b
	return true
}

// positive is the smallest duration allowed where zero makes no sense.
const positive = time.Nanosecond

// duration reads a Go duration in [lo, hi]; hi == 0 means no upper bound.
func (m *mapping) duration(key string, dst *time.Duration, lo, hi time.Duration) bool {
	v := m.get(key)
	if v == nil {
		return true
	}
	s, ok := m.scalar(v, key, "a duration")
	if !ok {
		return false
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			m.d.add(v.Line, m.field(key), "duration %q needs a unit, as in %ss or %sms", s, s, s)
		} else {
			m.d.add(v.Line, m.field(key), "invalid duration %q; use Go syntax like 500ms, 2s, 5m, 1h", s)
		}
		return false
	}
	switch {
	case dur < lo && lo == 0:
		m.d.add(v.Line, m.field(key), "must not be negative (got %s)", fmtDur(dur))
	case dur < lo && lo == positive:
		m.d.add(v.Line, m.field(key), "must be greater than 0 (got %s)", fmtDur(dur))
	case dur < lo && hi == 0:
		m.d.add(v.Line, m.field(key), "must be at least %s (got %s)", fmtDur(lo), fmtDur(dur))
	case dur < lo || (hi != 0 && dur > hi):
		m.d.add(v.Line, m.field(key), "must be between %s and %s (got %s)", fmtDur(lo), fmtDur(hi), fmtDur(dur))
	default:
		*dst = dur
		return true
	}
	return false
}

func (m *mapping) size(key string, dst *int, lo, hi int64) bool {
	v := m.get(key)
	if v == nil {
		return true
	}
	s, ok := m.scalar(v, key, "a size")
	if !ok {
		return false
	}
	n, err := ParseSize(s)
	if errors.Is(err, errSizeSyntax) {
		m.d.add(v.Line, m.field(key), "invalid size %q; use bytes (4096) or a unit: KiB, MiB, GiB, KB, MB, GB", s)
		return false
	}
	if err != nil || n < lo || n > hi {
		m.d.add(v.Line, m.field(key), "must be between %s and %s (got %s)", FormatSize(lo), FormatSize(hi), strings.TrimSpace(s))
		return false
	}
	*dst = int(n)
	return true
}

// addrPort reads an IP:port that must name one unicast host.
func (m *mapping) addrPort(v *yaml.Node, key string) (netip.AddrPort, bool) {
	if v.Kind == yaml.SequenceNode {
		m.d.add(v.Line, m.field(key), "expected an address IP:port, got a list (quote IPv6 addresses: \"[2001:db8::1]:80\")")
		return netip.AddrPort{}, false
	}
	s, ok := m.scalar(v, key, "an address IP:port")
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
	if err != nil {
		m.d.add(v.Line, m.field(key), "%q is not IP:port (IPv4:port or [IPv6]:port; host names are not allowed)", s)
		return netip.AddrPort{}, false
	}
	if ap.Port() == 0 {
		m.d.add(v.Line, m.field(key), "port must be between 1 and 65535 (got 0)")
		return netip.AddrPort{}, false
	}
	if !m.unicast(v, key, ap.Addr()) {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// unicast checks that a is usable as one host's address.
func (m *mapping) unicast(v *yaml.Node, key string, a netip.Addr) bool {
	switch {
	case a.Zone() != "":
		m.d.add(v.Line, m.field(key), "IPv6 zones (%%%s) are not supported", a.Zone())
	case a.IsUnspecified():
		m.d.add(v.Line, m.field(key), "%s is the unspecified address; give the address of one host", a)
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		m.d.add(v.Line, m.field(key), "%s is not a unicast address", a)
	default:
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest offers the closest known key, or lists them all.
func suggest(key string, known []string) string {
	best, bestDist := "", math.MaxInt
	for _, k := range known {
		if dist := editDistance(strings.ToLower(key), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if bestDist <= 2 && bestDist < len(key) {
		return "did you mean " + best + "?"
	}
	return "expected one of: " + strings.Join(known, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// list checks that the value of key is a sequence and returns its items
// (aliases resolved); ok is false when it is not a list.
func (m *mapping) list(key string) (items []*yaml.Node, v *yaml.Node, ok bool) {
	v = m.get(key)
	if v == nil {
		return nil, nil, true
	}
	if v.Kind != yaml.SequenceNode {
		m.d.add(v.Line, m.field(key), "expected a list, got %s", describe(v))
		return nil, v, false
	}
	for _, it := range v.Content {
		items = append(items, deref(it))
	}
	return items, v, true
}

// ---- the schema ----

func (d *decoder) config(root *yaml.Node) *Config {
	cfg := &Config{
		TCP:           DefaultTCP(),
		DrainTimeout:  DefaultDrainTimeout,
		StateDir:      DefaultStateDir,
		ClientTimeout: DefaultClientTimeout,
		Admin:         Admin{Address: DefaultAdminAddress},
		Log:           Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
	m := d.mapping(root, "", "interfaces", "listeners", "tcp", "drain_timeout", "client_timeout", "state_dir", "admin", "log", "bgp")

	d.interfaces(m, cfg)
	d.listeners(m, cfg)
	if v := m.get("tcp"); v != nil {
		d.tcp(v, &cfg.TCP)
	}
	m.duration("drain_timeout", &cfg.DrainTimeout, 0, 0)
	m.duration("client_timeout", &cfg.ClientTimeout, 0, 0)
	if v := m.get("state_dir"); v != nil {
		if s, ok := m.scalar(v, "state_dir", "a directory path"); ok {
			switch {
			case !filepath.IsAbs(s):
				d.add(v.Line, "state_dir", "%q is not an absolute path", s)
			case filepath.Clean(s) == "/":
				d.add(v.Line, "state_dir", "must not be the root directory")
			default:
				cfg.StateDir = filepath.Clean(s)
			}
		}
	}
	if v := m.get("admin"); v != nil {
		d.admin(v, &cfg.Admin)
	}
	if v := m.get("log"); v != nil {
		if lm := d.mapping(v, "log", "level", "format"); lm != nil {
			lm.enum("level", &cfg.Log.Level, LogLevels)
			lm.enum("format", &cfg.Log.Format, LogFormats)
		}
	}
	if v := m.get("bgp"); v != nil {
		cfg.BGP = d.bgp(v, cfg.Listeners)
	}
	cfg.Lines = d.lines
	return cfg
}

// needItems reports a missing or empty list that needs at least one item.
func (m *mapping) needItems(key string, items []*yaml.Node, v *yaml.Node, msg string) bool {
	if len(items) > 0 {
		return true
	}
	line := m.node.Line
	if v != nil {
		line = v.Line
	} else if e, ok := m.fields[key]; ok {
		line = e.key.Line
	}
	m.d.add(line, m.field(key), "%s", msg)
	return false
}

func (d *decoder) interfaces(m *mapping, cfg *Config) {
	items, v, ok := m.list("interfaces")
	if !ok || !m.needItems("interfaces", items, v, "at least one interface is required") {
		return
	}
	firstLine := map[string]int{}
	for i, it := range items {
		path := index("interfaces", i)
		im := d.mapping(it, path, "name", "queues", "xdp_mode", "zerocopy", "busy_poll")
		if im == nil {
			continue
		}
		ifc := Interface{XDPMode: DefaultXDPMode, ZeroCopy: DefaultZeroCopy, BusyPoll: DefaultBusyPoll}
		if nv := im.required("name"); nv != nil {
			if name, ok := im.scalar(nv, "name", "an interface name"); ok {
				switch {
				case !validIfName(name):
					d.add(nv.Line, im.field("name"), "invalid interface name %q: 1 to %d characters, no '/', ':' or spaces", name, MaxIfNameLen)
				case firstLine[name] != 0:
					d.add(nv.Line, im.field("name"), "duplicate interface name %q (first at line %d)", name, firstLine[name])
				default:
					firstLine[name] = nv.Line
					ifc.Name = name
				}
			}
		}
		if qv := im.get("queues"); qv != nil {
			ifc.Queues = d.queues(im, qv)
		}
		modeOK := im.enum("xdp_mode", &ifc.XDPMode, XDPModes)
		if im.enum("zerocopy", &ifc.ZeroCopy, ZeroCopyModes) && modeOK && ifc.ZeroCopy == "on" && ifc.XDPMode == "generic" {
			d.add(im.get("zerocopy").Line, im.field("zerocopy"), "zero-copy needs native XDP; xdp_mode is generic")
		}
		im.duration("busy_poll", &ifc.BusyPoll, 0, MaxBusyPoll)
		cfg.Interfaces = append(cfg.Interfaces, ifc)
	}
}

func validIfName(s string) bool {
	if s == "" || len(s) > MaxIfNameLen || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r == '/' || r == ':' || r <= ' ' || r == 0x7f
	})
}

func (d *decoder) queues(im *mapping, v *yaml.Node) []int {
	const what = `"all" or a list of queue ids`
	if v.Kind == yaml.ScalarNode {
		if v.Value != "all" {
			d.add(v.Line, im.field("queues"), "expected %s, got %s", what, describe(v))
		}
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		d.add(v.Line, im.field("queues"), "expected %s, got %s", what, describe(v))
		return nil
	}
	if len(v.Content) == 0 {
		d.add(v.Line, im.field("queues"), `the list is empty; use "all" or list queue ids`)
		return nil
	}
	var out []int
	seen := map[int]bool{}
	for j, q := range v.Content {
		q = deref(q)
		path := index(im.field("queues"), j)
		var n int
		if q.Kind != yaml.ScalarNode || q.ShortTag() != "!!int" || q.Decode(&n) != nil {
			d.add(q.Line, path, "expected a queue id (an integer), got %s", describe(q))
			continue
		}
		switch {
		case n < 0:
			d.add(q.Line, path, "queue id must not be negative (got %d)", n)
		case seen[n]:
			d.add(q.Line, path, "duplicate queue id %d", n)
		default:
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

var listenerKeys = []string{"name", "address", "balance", "dial", "source", "source_ports",
	"proxy_protocol", "connect_timeout", "idle_timeout", "max_connections", "health_check", "backends"}

func (d *decoder) listeners(m *mapping, cfg *Config) {
	items, v, ok := m.list("listeners")
	if !ok || !m.needItems("listeners", items, v, "at least one listener is required") {
		return
	}
	seen := &listenerSeen{names: map[string]int{}, addrs: map[netip.AddrPort]int{}}
	for i, it := range items {
		lm := d.mapping(it, index("listeners", i), listenerKeys...)
		if lm == nil {
			continue
		}
		cfg.Listeners = append(cfg.Listeners, d.listener(lm, seen))
	}
}

// listenerSeen remembers the line of each listener name and address so far.
type listenerSeen struct {
	names map[string]int
	addrs map[netip.AddrPort]int
}

func (d *decoder) listener(lm *mapping, seen *listenerSeen) Listener {
	l := Listener{
		Balance:        DefaultBalance,
		Dial:           DefaultDial,
		SourcePorts:    [2]uint16{DefaultSourcePortLo, DefaultSourcePortHi},
		ProxyProtocol:  DefaultProxyProtocol,
		ConnectTimeout: DefaultConnectTimeout,
		IdleTimeout:    DefaultIdleTimeout,
		MaxConnections: DefaultMaxConnections,
	}
	if nv := lm.required("name"); nv != nil {
		if name, ok := lm.scalar(nv, "name", "a name"); ok {
			switch {
			case !validName(name):
				d.add(nv.Line, lm.field("name"), "invalid name %q: 1 to %d letters, digits, '-', '_' or '.'", name, MaxNameLen)
			case seen.names[name] != 0:
				d.add(nv.Line, lm.field("name"), "duplicate listener name %q (first at line %d)", name, seen.names[name])
			default:
				seen.names[name] = nv.Line
				l.Name = name
			}
		}
	}
	if av := lm.required("address"); av != nil {
		if ap, ok := lm.addrPort(av, "address"); ok {
			if first := seen.addrs[ap]; first != 0 {
				d.add(av.Line, lm.field("address"), "duplicate listener address %s (first at line %d)", ap, first)
			} else {
				seen.addrs[ap] = av.Line
				l.Address = ap
			}
		}
	}
	lm.enum("balance", &l.Balance, BalanceModes)
	dialOK := lm.enum("dial", &l.Dial, DialModes)
	if sv := lm.get("source"); sv != nil {
		if s, ok := lm.scalar(sv, "source", "an IP address"); ok {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			switch {
			case err != nil:
				d.add(sv.Line, lm.field("source"), "%q is not an IP address", s)
			case !lm.unicast(sv, "source", a):
			case dialOK && l.Dial != "xdp":
				d.add(sv.Line, lm.field("source"), "source applies to dial: xdp only")
			default:
				l.Source = a
			}
		}
	}
	if pv := lm.get("source_ports"); pv != nil {
		if ports, ok := d.portRange(lm, pv); ok {
			if dialOK && l.Dial != "xdp" {
				d.add(pv.Line, lm.field("source_ports"), "source_ports applies to dial: xdp only")
			} else {
				l.SourcePorts = ports
			}
		}
	}
	lm.enum("proxy_protocol", &l.ProxyProtocol, ProxyProtocols)
	lm.duration("connect_timeout", &l.ConnectTimeout, positive, 0)
	lm.duration("idle_timeout", &l.IdleTimeout, positive, 0)
	lm.integer("max_connections", &l.MaxConnections, 0, math.MaxInt)
	if hv := lm.get("health_check"); hv != nil {
		l.HealthCheck = d.healthCheck(hv, lm.field("health_check"))
	}
	d.backends(lm, &l)
	return l
}

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (d *decoder) portRange(lm *mapping, v *yaml.Node) ([2]uint16, bool) {
	field := lm.field("source_ports")
	s, ok := lm.scalar(v, "source_ports", "a port range LO-HI")
	if !ok {
		return [2]uint16{}, false
	}
	lo, hi, found := strings.Cut(s, "-")
	lo, hi = strings.TrimSpace(lo), strings.TrimSpace(hi)
	if !found || !isDigits(lo) || !isDigits(hi) {
		d.add(v.Line, field, "expected a port range LO-HI like 20000-59999, got %q", s)
		return [2]uint16{}, false
	}
	a, errA := strconv.Atoi(lo)
	b, errB := strconv.Atoi(hi)
	switch {
	case errA != nil || errB != nil || a < 1 || b < 1 || a > 65535 || b > 65535:
		d.add(v.Line, field, "ports must be between 1 and 65535 (got %s)", s)
	case a > b:
		d.add(v.Line, field, "range %d-%d is empty: %d is above %d", a, b, a, b)
	default:
		return [2]uint16{uint16(a), uint16(b)}, true
	}
	return [2]uint16{}, false
}

func isDigits(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}

func (d *decoder) healthCheck(v *yaml.Node, path string) *HealthCheck {
	hm := d.mapping(v, path, "interval", "timeout", "rise", "fall")
	if hm == nil {
		return nil
	}
	hc := DefaultHealthCheck()
	intervalOK := hm.duration("interval", &hc.Interval, positive, 0)
	timeoutOK := hm.duration("timeout", &hc.Timeout, positive, 0)
	hm.integer("rise", &hc.Rise, 1, math.MaxInt)
	hm.integer("fall", &hc.Fall, 1, math.MaxInt)
	if intervalOK && timeoutOK && hc.Timeout > hc.Interval {
		if tv := hm.get("timeout"); tv != nil {
			d.add(tv.Line, hm.field("timeout"), "must not exceed interval (%s)", fmtDur(hc.Interval))
		} else {
			d.add(hm.get("interval").Line, hm.field("interval"), "must not be shorter than timeout (%s)", fmtDur(hc.Timeout))
		}
	}
	return &hc
}

func (d *decoder) backends(lm *mapping, l *Listener) {
	items, v, ok := lm.list("backends")
	if !ok || !lm.needItems("backends", items, v, "at least one backend is required") {
		return
	}
	firstLine := map[netip.AddrPort]int{}
	for i, it := range items {
		path := index(lm.field("backends"), i)
		if it.Kind == yaml.ScalarNode {
			d.add(it.Line, path, "expected a mapping like {address: IP:port}, got %s", describe(it))
			continue
		}
		bm := d.mapping(it, path, "address", "weight")
		if bm == nil {
			continue
		}
		b := Backend{Weight: DefaultWeight}
		if av := bm.required("address"); av != nil {
			if ap, ok := bm.addrPort(av, "address"); ok {
				switch {
				case firstLine[ap] != 0:
					d.add(av.Line, bm.field("address"), "duplicate backend %s (first at line %d)", ap, firstLine[ap])
				case ap == l.Address:
					d.add(av.Line, bm.field("address"), "backend %s is the listener's own address", ap)
				case l.Source.IsValid() && l.Source.Is4() != ap.Addr().Is4():
					d.add(av.Line, bm.field("address"), "address family differs from the listener's source %s", l.Source)
				default:
					firstLine[ap] = av.Line
					b.Address = ap
				}
			}
		}
		bm.integer("weight", &b.Weight, 1, MaxWeight)
		l.Backends = append(l.Backends, b)
	}
}

func (d *decoder) tcp(v *yaml.Node, t *TCP) {
	tm := d.mapping(v, "tcp", "syn_cookies", "syn_backlog", "accept_backlog", "time_wait", "time_wait_max",
		"congestion_control", "min_rto", "max_retries", "keepalive", "nodelay", "rcv_buffer", "snd_buffer", "memory_limit")
	if tm == nil {
		return
	}
	tm.enum("syn_cookies", &t.SYNCookies, SYNCookieModes)
	tm.integer("syn_backlog", &t.SYNBacklog, 1, math.MaxInt32)
	tm.integer("accept_backlog", &t.AcceptBacklog, 1, math.MaxInt32)
	tm.duration("time_wait", &t.TimeWait, positive, 0)
	tm.integer("time_wait_max", &t.TimeWaitMax, 1, math.MaxInt32)
	tm.enum("congestion_control", &t.CongestionControl, CongestionControl)
	tm.duration("min_rto", &t.MinRTO, MinMinRTO, MaxMinRTO)
	tm.integer("max_retries", &t.MaxRetries, 1, MaxRetries)
	if kv := tm.get("keepalive"); kv != nil {
		if km := d.mapping(kv, "tcp.keepalive", "idle", "interval", "probes"); km != nil {
			km.duration("idle", &t.Keepalive.Idle, positive, 0)
			km.duration("interval", &t.Keepalive.Interval, positive, 0)
			km.integer("probes", &t.Keepalive.Probes, 1, MaxProbes)
		}
	}
	tm.boolean("nodelay", &t.NoDelay)
	tm.size("rcv_buffer", &t.RcvBuffer, MinBuffer, MaxBuffer)
	tm.size("snd_buffer", &t.SndBuffer, MinBuffer, MaxBuffer)
	if v := tm.get("memory_limit"); v != nil && v.Kind == yaml.ScalarNode && strings.TrimSpace(v.Value) == "auto" {
		t.MemoryLimit = 0
	} else {
		tm.size("memory_limit", &t.MemoryLimit, MinMemoryLimit, MaxMemoryLimit)
	}
}

func (d *decoder) admin(v *yaml.Node, a *Admin) {
	am := d.mapping(v, "admin", "address", "token_file")
	if am == nil {
		return
	}
	if tv := am.get("token_file"); tv != nil {
		if s, ok := am.scalar(tv, "token_file", "a file path"); ok && s != "" {
			if !filepath.IsAbs(s) {
				d.add(tv.Line, am.field("token_file"), "%q is not an absolute path", s)
			} else {
				a.TokenFile = filepath.Clean(s)
			}
		}
	}
	if am.has("address") {
		d.adminAddress(am, a)
	}
	if a.Address != "" && a.TokenFile == "" && !LoopbackAddress(a.Address) {
		line := am.node.Line
		if av := am.get("address"); av != nil {
			line = av.Line
		}
		d.add(line, am.field("address"), "%s is not a loopback address, so the admin server needs a bearer token: set admin.token_file (a file holding the token, mode 0600), or listen on 127.0.0.1", a.Address)
	}
}

func (d *decoder) adminAddress(am *mapping, a *Admin) {
	av := am.get("address")
	if av == nil { // address: (null) disables the admin server
		a.Address = ""
		return
	}
	s, ok := am.scalar(av, "address", "host:port")
	if !ok {
		return
	}
	s = strings.TrimSpace(s)
	if s == "" {
		a.Address = ""
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || strings.ContainsAny(host, " /") {
		d.add(av.Line, am.field("address"), "%q is not host:port (like 127.0.0.1:9100); use \"\" to disable the admin server", s)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		d.add(av.Line, am.field("address"), "port must be between 1 and 65535 (got %q)", port)
		return
	}
	a.Address = s
}
