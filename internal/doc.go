// Package internal holds what xdproxy's commands and tests share but no
// outside program should import: the configuration (config), the checks
// against the host (preflight), the state directory (statedir), the admin
// API client (adminclient), the network-namespace lab (lab) and the demo.
package internal
