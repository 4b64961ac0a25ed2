package stack

// timerHeap orders connections by their next deadline (a binary min-heap with
// each connection's index stored in it, so re-arming is O(log n) and never
// allocates once the heap has grown). Each connection is in the heap at most
// once, under the earliest of its timers (see Conn.rearm).
type timerHeap []*Conn

func (h timerHeap) less(i, j int) bool { return h[i].deadline < h[j].deadline }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h timerHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.swap(i, m)
		i = m
	}
}

// set puts c in the heap under c.deadline, or takes it out when the deadline is Never.
func (h *timerHeap) set(c *Conn) {
	switch {
	case c.deadline == Never && c.heapIdx >= 0:
		h.remove(c)
	case c.deadline == Never:
	case c.heapIdx < 0:
		c.heapIdx = len(*h)
		*h = append(*h, c)
		h.up(c.heapIdx)
	default:
		h.up(c.heapIdx)
		h.down(c.heapIdx)
	}
}

func (h *timerHeap) remove(c *Conn) {
	i := c.heapIdx
	if i < 0 {
		return
	}
	last := len(*h) - 1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	c.heapIdx = -1
	if i != last {
		h.up(i)
		h.down(i)
	}
}

// peek returns the connection with the earliest deadline, or nil.
func (h timerHeap) peek() *Conn {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}
