package worker

import (
	"testing"
	"time"
)

// TestBackoff: a retryable failure waits under RetryBase·2^(attempt-1),
// capped at RetryMax (the kit's full jitter, pinned in package retry).
func TestBackoff(t *testing.T) {
	t.Parallel()
	w := &Worker{cfg: Config{RetryBase: 15 * time.Second, RetryMax: 15 * time.Minute}}
	for _, tt := range []struct {
		attempt int
		ceiling time.Duration
	}{{0, 15 * time.Second}, {1, 15 * time.Second}, {2, 30 * time.Second}, {4, 2 * time.Minute}, {8, 15 * time.Minute}, {30, 15 * time.Minute}} {
		for range 20 {
			if d := w.backoff(tt.attempt); d < 0 || d >= tt.ceiling {
				t.Fatalf("backoff(%d) = %s, want in [0, %s)", tt.attempt, d, tt.ceiling)
			}
		}
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
