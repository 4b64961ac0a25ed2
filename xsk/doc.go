// Package xsk will hold xdproxy's AF_XDP sockets: UMEM, the fill, completion,
// RX and TX rings, and the frame allocator. Not built yet: see the README's
// Status section.
package xsk
