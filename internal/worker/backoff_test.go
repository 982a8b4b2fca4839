package worker

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	const base, limit = 15 * time.Second, 15 * time.Minute
	tests := []struct {
		name    string
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{"first attempt, no jitter offset", 1, 0.5, 15 * time.Second},
		{"first attempt, lowest jitter", 1, 0, 12 * time.Second},
		{"first attempt, highest jitter", 1, 0.999999, 18 * time.Second},
		{"second attempt doubles", 2, 0.5, 30 * time.Second},
		{"fourth attempt", 4, 0.5, 2 * time.Minute},
		{"capped at the maximum", 8, 0.5, limit},
		{"jitter never exceeds the maximum", 30, 0.999999, limit},
		{"jitter below the maximum when capped", 30, 0, 12 * time.Minute},
		{"attempt zero is treated as the first", 0, 0.5, 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := backoff(tt.attempt, base, limit, tt.jitter).Round(time.Second)
			if got != tt.want {
				t.Errorf("backoff(%d, %s, %s, %v) = %s, want %s", tt.attempt, base, limit, tt.jitter, got, tt.want)
			}
		})
	}
}

func TestNextPoll(t *testing.T) {
	t.Parallel()
	var got []time.Duration
	d := time.Duration(0)
	for range 7 {
		d = nextPoll(d, 5*time.Second)
		got = append(got, d)
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("poll waits = %v, want %v", got, want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{ManifestVersion: "v1"}, false},
		{"manifest version required", Config{}, true},
		{"batch over 32", Config{ManifestVersion: "v1", ReceiveBatch: 33}, true},
		{"retry max below base", Config{ManifestVersion: "v1", RetryBase: time.Minute, RetryMax: time.Second}, true},
		{"visibility too short to extend", Config{ManifestVersion: "v1", Visibility: time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			err := cfg.defaults()
			if (err != nil) != tt.wantErr {
				t.Fatalf("defaults() error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (cfg.Concurrency != DefaultConcurrency || cfg.ReceiveBatch != DefaultConcurrency ||
				cfg.WorkerID == "" || cfg.Logger == nil || cfg.Metrics == nil) {
				t.Errorf("defaults not applied: %+v", cfg)
			}
		})
	}
}
