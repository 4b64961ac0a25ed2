module github.com/xdproxy/xdproxy

go 1.26

require (
	github.com/dchest/siphash v1.2.3
	github.com/valyala/bytebufferpool v1.0.0
)

require github.com/gopacket/gopacket v1.7.7 // indirect
