package main

import (
	"strings"
	"testing"
)

func TestThousands(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	in := `{"spec":"n=10000,fleet=correct,latency=50ms,workers=2,warm=true,staged=true","command":"BENCH_FLEET='x' go test","tenants":10000,"fleet":"correct","workers":2,"concurrency":16,"latencyNs":50000000,"staged":true,"enqueueNs":21500000000,"drainNs":87000000000,"tenantsPerSec":115,"limitPerSec":320,"kinds":{"correct":{"tenants":10000,"token":1,"graph":1,"batchItems":4,"simTrips":2,"trips":5,"maxTrips":5}},"all":{"tenants":10000,"simTrips":2,"trips":5},"p50Ns":29000000,"p95Ns":101000000,"p99Ns":133000000,"memory":{"dispatcher":30408704,"worker-1":50331648,"worker-2":49283072,"azurite":493879296},"loadavg":"0.91 1.56 2.47","ceiling":{"tenants":2000,"elapsedNs":10000000000,"perSec":200,"receives":150},"cpuCores":{"azurite":0.9,"worker-1":0.2,"worker-2":0.25,"harness":0.3,"dispatcher":0.05,"machine":1.95},"cores":2}
{"spec":"n=1000,fleet=new,latency=0s,workers=1","command":"BENCH_FLEET='y' go test","tenants":1000,"fleet":"new","workers":1,"concurrency":16,"enqueueNs":1000000000,"drainNs":20000000000,"tenantsPerSec":50,"all":{"tenants":1000,"simTrips":10,"trips":13},"loadavg":"1.00 1.00 1.00"}

`
	rows, err := read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	write(&b, rows)
	for _, want := range []string{
		"| 1 | 10,000 | correct (warm, staged) | 50ms | 2×16 | 21.5 | 87.0 | 115.0 | 200.0 | **0.57** | 320 | 29 / 101 / 133 | 5.00 | 2.00 | 0 | 29 / 48 / 471 | 0.91 |",
		"1. `BENCH_FLEET='x' go test`",
		"| 1 | 10,000 | correct (warm, staged) | 50ms | 2×16 | 0.57 | 0.90 / 0.45 / 0.30 / 0.05 / **1.70** | 1.95 (of 2) |",
		"| 2 | 1,000 | new | 0 | 1×16 | 1.0 | 20.0 | 50.0 | not measured | — | none (no latency) |",
		"| 1 | correct (10,000) | 1.00 | 0.00 | 1.00 | 4.0 | 0.00 | 0.0 | 0.00 | 2.00 | 5.00 (5) |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if _, err := read(strings.NewReader("{")); err == nil {
		t.Error("read of a broken line: no error")
	}
	if _, err := read(strings.NewReader("")); err == nil {
		t.Error("read of nothing: no error")
	}
}
