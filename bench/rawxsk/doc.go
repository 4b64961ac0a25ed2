// Package rawxsk measures the raw frame rates of a veth pair: 64-byte UDP
// test frames sent and received through AF_XDP sockets (package xsk, copy
// mode: veth has no zero-copy) with nothing above them, and the kernel's
// own paths beside them (AF_PACKET and UDP sockets with sendmmsg and
// recvmmsg). It holds the pieces shared by the micro-benchmarks of package
// bench (BenchmarkRawRX, BenchmarkRawTX) and the side-by-side harness
// (bench/cmd/sidebyside), which reports xdproxy's own frame rate as a
// fraction of MeasureTX and MeasureRX on the lab's proxy veth.
//
// Nothing here reads or writes anything outside the namespaces it is given,
// and every measurement is bounded: in frames (a total) and in time (a
// deadline). Functions that open something return it for the caller to
// close; MeasureTX and MeasureRX close all they opened, XDP programs
// detached first, also on failure.
//
// Files: frame.go (the test frame), mmsg.go (sendmmsg/recvmmsg without
// allocations), xdp.go (the two tiny XDP programs, the frame counter,
// attaching), socket.go (AF_PACKET, UDP and AF_XDP sockets in a
// namespace), send.go and receive.go (the bounded send loops and the
// receivers), rate.go (the raw rates of a veth for the harness).
package rawxsk
