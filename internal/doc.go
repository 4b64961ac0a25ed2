// Package internal holds helpers that several packages' tests share (the
// network-namespace lab, packet builders). Empty until the data plane lands.
package internal
