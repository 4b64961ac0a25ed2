// Package wire holds the packet formats the engine speaks: Ethernet (802.1Q
// and 802.1ad tags skipped), ARP for IPv4 over Ethernet, IPv4 without
// fragments, IPv6 without extension headers, ICMPv4 and ICMPv6 (echo, the
// path MTU errors, neighbor discovery) and TCP with every option Linux sends
// or accepts.
//
// Input and output are asymmetric on purpose. Parse is the one place where
// untrusted bytes are checked: it validates a whole frame once, fills a
// Packet whose slices alias the frame, and on any defect returns the Drop
// reason for the engine to count (never an error to handle, never a panic).
// Nothing downstream re-checks lengths. The Encode functions write headers in
// place into a caller buffer, compute every length and checksum, and return
// the frame length or 0 when the buffer is too small.
//
// Neither direction allocates; the benchmarks check it with ReportAllocs.
//
// Checksums follow RFC 1071, summed 64 bits at a time (see Sum); on a
// virtual interface Parse can accept the unfinished TCP checksum of a
// CHECKSUM_PARTIAL sender (ParseAllowPartialL4Checksum). Drop reasons
// follow RFC 1122 (what a host must discard), RFC 9293 §3.10.7 (TCP segment
// acceptance), RFC 4861 §7.1 (neighbor discovery validation) and RFC 8200 §4
// (extension headers, which we do not walk).
package wire
