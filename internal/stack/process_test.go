package stack

import "testing"

func TestParseKB(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{"   123 kB": 123 << 10, "0 kB": 0, "": 0, "x kB": 0}
	for in, want := range tests {
		if got := parseKB(in); got != want {
			t.Errorf("parseKB(%q) = %d, want %d", in, got, want)
		}
	}
}
