// Command xdproxy is the daemon's command line: run, check, version
// (see CONFIG.md). Only `version` works until the daemon lands.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: xdproxy run|check|version [--config FILE]")
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Printf("xdproxy %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" || s.Key == "vcs.time" {
					fmt.Printf("%s %s\n", s.Key, s.Value)
				}
			}
		}
		return 0
	case "run", "check":
		fmt.Fprintf(os.Stderr, "xdproxy %s: not built yet (the daemon is a later milestone; see README Status)\n", args[0])
		return 1
	default:
		fmt.Fprintf(os.Stderr, "xdproxy: unknown command %q (want run, check or version)\n", args[0])
		return 2
	}
}
