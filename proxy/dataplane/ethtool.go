package dataplane

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Driver statistics (ethtool -S) through the SIOCETHTOOL ioctl: the XDP
// cookie controller watches veth's rx_queue_N_xdp_tx_errors, which is where
// the kernel counts the XDP_TX frames a veth whose peer has no NAPI refuses
// (cookies.go).

const (
	ethtoolGStrings = 0x1b // ETHTOOL_GSTRINGS
	ethtoolGStats   = 0x1d // ETHTOOL_GSTATS
	ethtoolGSSet    = 0x37 // ETHTOOL_GSSET_INFO
	ethSSStats      = 1    // ETH_SS_STATS
	ethGStringLen   = 32   // ETH_GSTRING_LEN
)

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// ethtoolStats reads an interface's driver statistics by name. fd is any
// socket in the interface's namespace.
type ethtoolStats struct {
	fd    int
	iface string
	names []string
}

func newEthtoolStats(fd int, iface string) (*ethtoolStats, error) {
	s := &ethtoolStats{fd: fd, iface: iface}
	info := struct {
		cmd, _ uint32
		mask   uint64
		count  uint32
	}{cmd: ethtoolGSSet, mask: 1 << ethSSStats}
	if err := s.ioctl(unsafe.Pointer(&info)); err != nil {
		return nil, fmt.Errorf("ethtool stats of %s: %w", iface, err)
	}
	if info.mask&(1<<ethSSStats) == 0 || info.count == 0 {
		return s, nil
	}
	buf := make([]byte, 12+int(info.count)*ethGStringLen)
	*(*[3]uint32)(unsafe.Pointer(&buf[0])) = [3]uint32{ethtoolGStrings, ethSSStats, info.count}
	if err := s.ioctl(unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("ethtool stat names of %s: %w", iface, err)
	}
	for i := range int(info.count) {
		b := buf[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if n := bytes.IndexByte(b, 0); n >= 0 {
			b = b[:n]
		}
		s.names = append(s.names, string(b))
	}
	return s, nil
}

func (s *ethtoolStats) ioctl(p unsafe.Pointer) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], s.iface)
	ifr.data = p
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(p)
	if errno != 0 {
		return errno
	}
	return nil
}

// sum returns the sum of the statistics whose names end in suffix.
func (s *ethtoolStats) sum(suffix string) (uint64, error) {
	if len(s.names) == 0 {
		return 0, nil
	}
	buf := make([]uint64, 1+len(s.names))
	*(*[2]uint32)(unsafe.Pointer(&buf[0])) = [2]uint32{ethtoolGStats, uint32(len(s.names))}
	if err := s.ioctl(unsafe.Pointer(&buf[0])); err != nil {
		return 0, fmt.Errorf("ethtool stats of %s: %w", s.iface, err)
	}
	var n uint64
	for i, name := range s.names {
		if strings.HasSuffix(name, suffix) {
			n += buf[1+i]
		}
	}
	return n, nil
}
