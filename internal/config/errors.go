package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a configuration file.
type Error struct {
	File  string // the name given to Parse, or the path given to Load
	Line  int    // 1-based line of the offending value (or of the mapping that lacks a required key)
	Field string // dotted path such as "listeners[0].health_check.rise"; empty for whole-document problems (syntax errors)
	Msg   string // what is wrong, lower case, no trailing period
}

// Error renders the problem as "FILE:LINE: field.path: what is wrong" (or
// "FILE:LINE: what is wrong" when Field is empty).
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// Errors is every problem found in a configuration file, in line order. Parse
// and Load return a *Errors (never an empty one) when the input is invalid.
type Errors []*Error

// Error renders one line per problem, "FILE:LINE: field.path: what is wrong",
// joined by newlines (no trailing newline).
func (e *Errors) Error() string {
	if e == nil {
		return ""
	}
	lines := make([]string, len(*e))
	for i, err := range *e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap gives errors.Is and errors.As access to each problem.
func (e *Errors) Unwrap() []error {
	if e == nil {
		return nil
	}
	out := make([]error, len(*e))
	for i, err := range *e {
		out[i] = err
	}
	return out
}

func (e *Errors) sort() {
	sort.SliceStable(*e, func(i, j int) bool { return (*e)[i].Line < (*e)[j].Line })
}
