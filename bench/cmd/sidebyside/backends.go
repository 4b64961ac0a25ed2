package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/xdproxy/xdproxy/internal/lab"
)

// The services every backend address serves (in this process, in the
// backend namespace), and the listener port each proxy gives them on
// 10.10.1.1. iperf is iperf3 -s on the first backend only (a test's control
// and data connections must reach the same server).
type service struct {
	name        string
	proxyPort   int
	backendPort int
	firstOnly   bool
}

var services = []service{
	{"echo", 7000, 8000, false},   // echoes what it reads: connection rate, request/response, idle
	{"source", 7001, 8001, false}, // sends until the client closes: bulk download
	{"sink", 7002, 8002, false},   // reads and discards: bulk upload
	{"http", 7003, 8003, false},   // a minimal HTTP/1.1 keep-alive responder: the wrk cross-check
	{"iperf", 7004, 5201, true},   // iperf3 -s: the iperf3 cross-check
}

// httpResponse is what the http service answers to every request.
const httpResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n"

type backendSet struct {
	mu  sync.Mutex
	lns []net.Listener
}

func startBackends(topo *lab.Topology) (*backendSet, error) {
	bs := &backendSet{}
	for _, a := range topo.BackendAddrs {
		for _, s := range services {
			var h func(net.Conn)
			switch s.name {
			case "echo":
				h = echoConn
			case "source":
				h = sourceConn
			case "sink":
				h = func(c net.Conn) { io.Copy(io.Discard, c) }
			case "http":
				h = httpConn
			default:
				continue
			}
			ln, err := topo.Backends.ListenTCP(fmt.Sprintf("%s:%d", a, s.backendPort))
			if err != nil {
				bs.close()
				return nil, err
			}
			bs.lns = append(bs.lns, ln)
			go serve(ln, h)
		}
	}
	return bs, nil
}

func (bs *backendSet) close() {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, ln := range bs.lns {
		ln.Close()
	}
	bs.lns = nil
}

func serve(ln net.Listener, h func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if strings.Contains(err.Error(), "too many open files") {
				time.Sleep(10 * time.Millisecond) // out of descriptors: wait for some to close
				continue
			}
			return
		}
		go func() {
			defer c.Close()
			h(c)
		}()
	}
}

func echoConn(c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

var sourceBuf = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

func sourceConn(c net.Conn) {
	// A reader that notices the client's close (the write side alone
	// would notice only with an RST).
	go io.Copy(io.Discard, c)
	for {
		if _, err := c.Write(sourceBuf); err != nil {
			return
		}
	}
}

func httpConn(c net.Conn) {
	r := bufio.NewReaderSize(c, 4096)
	for {
		// Headers until the empty line; requests carry no body (GET).
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 && strings.TrimSpace(string(line)) == "" {
				break
			}
		}
		if _, err := io.WriteString(c, httpResponse); err != nil {
			return
		}
	}
}
