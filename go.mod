module github.com/xdproxy/xdproxy

go 1.26

require (
	github.com/dchest/siphash v1.2.3
	github.com/valyala/bytebufferpool v1.0.0
)

require (
	github.com/cilium/ebpf v0.22.0 // indirect
	github.com/gopacket/gopacket v1.7.7 // indirect
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
