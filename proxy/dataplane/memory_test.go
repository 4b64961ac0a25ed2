package dataplane

import "testing"

func TestRebalanceFollowsUse(t *testing.T) {
	const limit = 1000
	cases := []struct {
		name string
		used []int64
		want []int64
	}{
		{"idle: even split", []int64{0, 0}, []int64{500, 500}},
		{"one busy shard gets the slack on top of its use", []int64{600, 0}, []int64{800, 200}},
		{"over budget: in proportion, every shard at its share", []int64{900, 300}, []int64{750, 250}},
		{"a quiet shard keeps the floor", []int64{1200, 0}, []int64{1000, 125}},
	}
	for _, c := range cases {
		got := rebalance(limit, c.used)
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: shares %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
	if got := rebalance(0, []int64{5, 5}); got[0] != 0 || got[1] != 0 {
		t.Errorf("no budget: shares %v, want none", got)
	}
}
