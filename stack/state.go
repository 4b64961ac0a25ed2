package stack

// State is a connection state of RFC 9293 section 3.3.2.
type State uint8

const (
	Closed State = iota
	Listen
	SynSent
	SynReceived
	Established
	FinWait1
	FinWait2
	CloseWait
	Closing
	LastAck
	TimeWait
	numStates
)

var stateNames = [numStates]string{
	Closed: "CLOSED", Listen: "LISTEN", SynSent: "SYN_SENT", SynReceived: "SYN_RCVD",
	Established: "ESTABLISHED", FinWait1: "FIN_WAIT_1", FinWait2: "FIN_WAIT_2",
	CloseWait: "CLOSE_WAIT", Closing: "CLOSING", LastAck: "LAST_ACK", TimeWait: "TIME_WAIT",
}

// NumStates is the number of states, for per-state gauges.
const NumStates = int(numStates)

// String is the state's name as ss(8) and netstat print it.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// synchronized reports a state past the handshake (RFC 9293 "synchronized states").
func (s State) synchronized() bool { return s >= Established }
