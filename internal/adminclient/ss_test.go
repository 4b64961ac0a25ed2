package adminclient

import (
	"bytes"
	"strings"
	"testing"

	"github.com/xdproxy/xdproxy/proxy/admin"
)

func TestSSFilter(t *testing.T) {
	f, err := ParseSSFilter([]string{"state", "established", "dport", "=", ":8080", "src", "10.10.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if f.StateParam() != "ESTABLISHED" || f.DPort != 8080 || f.Src.String() != "10.10.1.0/24" {
		t.Fatalf("parsed %+v", f)
	}
	in := admin.ConnDoc{State: "ESTABLISHED", Local: "10.10.1.1:20001", Remote: "10.10.2.2:8080"}
	out := admin.ConnDoc{State: "ESTABLISHED", Local: "10.10.1.1:80", Remote: "10.10.0.2:40000"}
	if !f.Match(in) || f.Match(out) {
		t.Errorf("match: backend leg %v, client leg %v; want true, false", f.Match(in), f.Match(out))
	}
	if g, _ := ParseSSFilter([]string{"dst [fd00::2]:8080"}); !g.Match(admin.ConnDoc{Local: "[fd00::1]:20000", Remote: "[fd00::2]:8080"}) || g.Match(admin.ConnDoc{Local: "[fd00::1]:20000", Remote: "[fd00::2]:80"}) {
		t.Error("dst [A]:P")
	}
	for _, bad := range [][]string{{"sport", ">", ":80"}, {"dport", "=", "80x"}, {"src"}, {"bogus"}} {
		if _, err := ParseSSFilter(bad); err == nil {
			t.Errorf("ParseSSFilter(%q): no error", bad)
		}
	}
}

func TestWriteSS(t *testing.T) {
	us, cwnd, in, out := int64(1500), 14480, uint64(99), uint64(119)
	var b bytes.Buffer
	WriteSS(&b, []admin.ConnDoc{{
		Interface: "p0", Shard: 1, State: "ESTABLISHED", Local: "10.10.1.1:80", Remote: "10.10.0.2:40000",
		Listener: "web", Leg: "client", RTTMicros: &us, Cwnd: &cwnd, BytesIn: &in, BytesOut: &out,
		TCP:   &admin.TCPDoc{RTTVarMicros: 500, RTOMillis: 201, MSS: 1448, Ssthresh: 65535, SendQueue: 3, RecvQueue: 2, SendWindow: 64000, RecvWindow: 65535},
		Other: "10.10.1.1:20001->10.10.2.2:8080",
	}, {
		Interface: "p0", Shard: 0, State: "ESTABLISHED", Local: "10.10.1.1:80", Remote: "10.10.0.3:40000",
		RTTMicros: &us, Cwnd: &cwnd,
		TCP: &admin.TCPDoc{RTTVarMicros: 500, RTOMillis: 201, MSS: 1448, Ssthresh: 65535, Congestion: "bbr",
			PacingRate: 123_400_000, DeliveryRate: 98_700_000, MinRTTMicros: 1250},
	}, {State: "TIME_WAIT", Local: "10.10.1.1:80", Remote: "10.10.0.2:40001"}})
	got := b.String()
	for _, want := range []string{
		"State       Recv-Q Send-Q Local Address:Port",
		"ESTAB       2      3      10.10.1.1:80",
		"shard=1 if=p0 listener=web leg=client",
		"\t rtt:1.500/0.500 rto:201 mss:1448 cwnd:14480 ssthresh:65535 snd_wnd:64000 rcv_wnd:65535 bytes_sent:119 bytes_received:99 retrans:0 other_leg:10.10.1.1:20001->10.10.2.2:8080\n",
		"\t bbr rtt:1.500/0.500 rto:201 mss:1448 cwnd:14480 ssthresh:65535 snd_wnd:0 rcv_wnd:0 pacing_rate 123.4Mbps delivery_rate 98.7Mbps minrtt:1.250 retrans:0\n",
		"TIME-WAIT   0      0      10.10.1.1:80",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
