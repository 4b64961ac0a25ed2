package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// microtableMain is `sidebyside microtable [FILE]`: it reads the output of
// `go test -bench` over several packages (stdin without FILE) and prints one
// Markdown table: package, benchmark, iterations, ns/op, B/op, allocs/op
// and every custom metric; skipped and failed benchmarks are listed below.
func microtableMain(args []string) int {
	var in io.Reader = os.Stdin
	if len(args) > 0 {
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "microtable:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	md, ok := microTable(in)
	fmt.Print(md)
	if !ok {
		return 1
	}
	return 0
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+(\d+)\s+(.*)$`)

type benchRow struct {
	pkg, name string
	iters     string
	ns, b, al string
	other     []string
}

func microTable(in io.Reader) (string, bool) {
	var (
		rows   []benchRow
		notes  []string
		pkg    string
		cpu    string
		ok     = true
		sc     = bufio.NewScanner(in)
		module = "github.com/xdproxy/xdproxy/"
	)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(strings.TrimPrefix(line, "pkg: "), module)
		case strings.HasPrefix(line, "cpu: "):
			cpu = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(strings.TrimSpace(line), "--- SKIP"), strings.HasPrefix(strings.TrimSpace(line), "--- FAIL"):
			notes = append(notes, fmt.Sprintf("%s: %s", pkg, strings.TrimSpace(line)))
			if strings.Contains(line, "FAIL") {
				ok = false
			}
		case strings.HasPrefix(line, "FAIL"):
			ok = false
			notes = append(notes, strings.TrimSpace(line))
		default:
			m := benchLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			r := benchRow{pkg: pkg, name: strings.TrimPrefix(m[1], "Benchmark"), iters: m[3]}
			f := strings.Fields(m[4])
			for i := 0; i+1 < len(f); i += 2 {
				v, unit := f[i], f[i+1]
				switch unit {
				case "ns/op":
					r.ns = v
				case "B/op":
					r.b = v
				case "allocs/op":
					r.al = v
				default:
					r.other = append(r.other, v+" "+unit)
				}
			}
			rows = append(rows, r)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Micro-benchmarks\n\n")
	if cpu != "" {
		fmt.Fprintf(&b, "CPU: %s.\n\n", cpu)
	}
	b.WriteString("| package | benchmark | iterations | ns/op | B/op | allocs/op | other metrics |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.pkg, r.name, r.iters, dash(r.ns), dash(r.b), dash(r.al), strings.Join(r.other, ", "))
	}
	if len(rows) == 0 {
		b.WriteString("| (no benchmark results) | | | | | | |\n")
	}
	if len(notes) > 0 {
		b.WriteString("\nSkipped or failed:\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String(), ok
}

func dash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
