package seqnum

import "testing"

func TestCompareAcrossWrap(t *testing.T) {
	cases := []struct {
		a, b Value
		less bool
	}{
		{1, 2, true},
		{2, 1, false},
		{0xffffffff, 0, true},
		{0xfffffff0, 0x10, true},
		{0x10, 0xfffffff0, false},
		{0, 0x7fffffff, true},
		{5, 5, false},
	}
	for _, c := range cases {
		if got := c.a.LessThan(c.b); got != c.less {
			t.Errorf("%#x < %#x = %v, want %v", c.a, c.b, got, c.less)
		}
		if c.a != c.b && c.b.GreaterThan(c.a) != c.less {
			t.Errorf("%#x > %#x disagrees with LessThan", c.b, c.a)
		}
	}
	if !Value(5).LessThanEq(5) || !Value(5).GreaterThanEq(5) {
		t.Error("equality must satisfy <= and >=")
	}
}

func TestInWindow(t *testing.T) {
	if !Value(0xfffffffe).InWindow(0xfffffff0, 0x20) {
		t.Error("value before wrap inside window")
	}
	if !Value(0x0f).InWindow(0xfffffff0, 0x20) {
		t.Error("value after wrap inside window")
	}
	if Value(0x10).InWindow(0xfffffff0, 0x20) {
		t.Error("end of window is exclusive")
	}
	if Value(7).InWindow(7, 0) {
		t.Error("zero window holds nothing")
	}
}

func TestOverlap(t *testing.T) {
	cases := []struct {
		seg     Value
		segLen  Size
		wnd     Value
		wndLen  Size
		overlap bool
	}{
		{100, 0, 100, 0, true},
		{101, 0, 100, 0, false},
		{100, 0, 100, 10, true},
		{110, 0, 100, 10, false},
		{100, 5, 100, 0, false},
		{95, 10, 100, 10, true},  // tail inside
		{109, 10, 100, 10, true}, // head inside
		{90, 10, 100, 10, false}, // ends just before
		{110, 1, 100, 10, false},
		{0xfffffffe, 4, 0, 10, true},
	}
	for _, c := range cases {
		if got := Overlap(c.seg, c.segLen, c.wnd, c.wndLen); got != c.overlap {
			t.Errorf("Overlap(%d,%d,%d,%d) = %v, want %v", c.seg, c.segLen, c.wnd, c.wndLen, got, c.overlap)
		}
	}
}

func TestMinMaxSize(t *testing.T) {
	if Max(0xffffffff, 1) != 1 || Min(0xffffffff, 1) != 0xffffffff {
		t.Error("Min/Max must use sequence order")
	}
	if Value(0xfffffff0).Size(0x10) != 0x20 {
		t.Error("Size across wrap")
	}
}
