package adminclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// pcapngStream is what /capture sends: two interfaces, three packets, a
// statistics block for each interface (the second one final); it returns
// the bytes and where each block ends.
func pcapngStream(t *testing.T) ([]byte, []int) {
	t.Helper()
	var buf bytes.Buffer
	var ends []int
	w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{Name: "p0", LinkType: layers.LinkTypeEthernet}, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	mark := func() {
		t.Helper()
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, buf.Len())
	}
	mark() // section header and first interface
	if _, err := w.AddInterface(pcapgo.NgInterface{Name: "p1", LinkType: layers.LinkTypeEthernet}); err != nil {
		t.Fatal(err)
	}
	mark()
	for i := range 3 {
		data := bytes.Repeat([]byte{byte(i)}, 61+i)
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, int64(i)), CaptureLength: len(data), Length: len(data), InterfaceIndex: i % 2}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
		mark()
	}
	if err := w.WriteInterfaceStats(0, pcapgo.NgInterfaceStatistics{PacketsReceived: 7, PacketsDropped: 3, LastUpdate: time.Now()}); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := w.WriteInterfaceStats(1, pcapgo.NgInterfaceStatistics{PacketsReceived: 2, PacketsDropped: 0, EndTime: time.Now(), LastUpdate: time.Now()}); err != nil {
		t.Fatal(err)
	}
	mark()
	return buf.Bytes(), ends
}

func TestCaptureClient(t *testing.T) {
	stream, ends := pcapngStream(t)
	cut := ends[3] + 10 // in the middle of the third packet's block
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		switch r.URL.Query().Get("count") {
		case "9": // refused
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error": "port \"0\": want a port, 1 to 65535"}`)
		case "3": // until the client shuts its sending side, then the final statistics
			w.Write(stream[:ends[4]])
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
				return
			}
			w.Write(stream[ends[4]:])
		case "2": // cut off mid-block: the connection drops
			w.Header().Set("Content-Length", "100000")
			w.Write(stream[:cut])
		default:
			w.Write(stream)
		}
	}))
	defer srv.Close()
	c := &Client{Addr: strings.TrimPrefix(srv.URL, "http://"), HTTP: &http.Client{Timeout: time.Second}}

	var out bytes.Buffer
	started := false
	sum, err := c.Capture(context.Background(), CaptureParams{Host: "10.0.0.1", Port: 80, Listener: "web", Count: 5, Duration: 30 * time.Second, Buffer: "16MiB"}, &out, func() { started = true }, nil)
	if err != nil || !started {
		t.Fatalf("Capture: %v (started %v)", err, started)
	}
	if query != "buffer=16MiB&count=5&duration=30s&host=10.0.0.1&listener=web&port=80" {
		t.Errorf("query %q", query)
	}
	if !bytes.Equal(out.Bytes(), stream) {
		t.Errorf("wrote %d bytes, want the %d of the stream", out.Len(), len(stream))
	}
	want := CaptureSummary{Frames: 3, Interfaces: []string{"p0", "p1"}, Stats: []CaptureIfStat{{7, 3}, {2, 0}}, Final: true}
	if got := fmt.Sprintf("%+v", sum); got != fmt.Sprintf("%+v", want) {
		t.Errorf("summary %s, want %+v", got, want)
	}

	// A stream cut mid-block: an error, and the output ends at the last whole block.
	out.Reset()
	sum, err = c.Capture(context.Background(), CaptureParams{Count: 2}, &out, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("a cut stream: %v", err)
	}
	if out.Len() != ends[3] || sum.Frames != 2 {
		t.Errorf("a cut stream: wrote %d bytes (%d frames), want %d (2)", out.Len(), sum.Frames, ends[3])
	}
	if _, err := pcapgo.NewNgReader(bytes.NewReader(out.Bytes()), pcapgo.DefaultNgReaderOptions); err != nil {
		t.Errorf("what was written is not pcapng: %v", err)
	}

	// Refused: the server's message.
	_, err = c.Capture(context.Background(), CaptureParams{Count: 9}, &out, func() { t.Error("started on a 400") }, nil)
	if err == nil || !strings.Contains(err.Error(), `400 Bad Request: port "0": want a port`) {
		t.Errorf("refused: %v", err)
	}

	// Stopped: the client shuts its side, the server ends with the final
	// statistics, and the client reads them.
	out.Reset()
	stop := make(chan struct{})
	sum, err = c.Capture(context.Background(), CaptureParams{Count: 3}, &out, func() { close(stop) }, stop)
	if err != nil || !sum.Final || sum.Stats[0] != (CaptureIfStat{7, 3}) || !bytes.Equal(out.Bytes(), stream) {
		t.Errorf("stopped: %v, %+v, %d bytes of %d", err, sum, out.Len(), len(stream))
	}
}
