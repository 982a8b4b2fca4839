package stack

import (
	"os"
	"testing"
	"time"
)

func TestParseKB(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{"   123 kB": 123 << 10, "0 kB": 0, "": 0, "x kB": 0}
	for in, want := range tests {
		if got := parseKB(in); got != want {
			t.Errorf("parseKB(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestCPUTime reads this process's CPU time from /proc before and after
// it spends some.
func TestCPUTime(t *testing.T) {
	before := CPUTime(os.Getpid())
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	if after := CPUTime(os.Getpid()); after <= before {
		t.Errorf("CPU time %v, then %v after a busy loop: want it to grow", before, after)
	}
	if MachineCPU() <= 0 {
		t.Error("no busy time read from /proc/stat")
	}
	if got := CPUTime(-1); got != 0 {
		t.Errorf("CPUTime of no process = %v, want 0", got)
	}
}
