package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// A setting reads empty until stored; a write over a version someone else
// replaced is refused with ErrChanged and changes nothing.
func TestSettings(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	st, err := s.GetSetting(ctx, "notify-urls")
	if err != nil || st.Value != "" || st.ETag != "" {
		t.Fatalf("unset setting: %+v %v", st, err)
	}
	if err := s.SetSetting(ctx, store.Setting{Name: "notify-urls", Value: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSetting(ctx, store.Setting{Name: "notify-urls", Value: "lost"}); !errors.Is(err, store.ErrChanged) {
		t.Errorf("creating a setting that exists: %v, want ErrChanged", err)
	}
	first, err := s.GetSetting(ctx, "notify-urls")
	if err != nil || first.Value != "a" || first.ETag == "" {
		t.Fatalf("stored setting: %+v %v", first, err)
	}
	first.Value = "b"
	if err := s.SetSetting(ctx, first); err != nil {
		t.Fatal(err)
	}
	first.Value = "stale"
	if err := s.SetSetting(ctx, first); !errors.Is(err, store.ErrChanged) {
		t.Errorf("writing over a replaced version: %v, want ErrChanged", err)
	}
	if got, _ := s.GetSetting(ctx, "notify-urls"); got.Value != "b" {
		t.Errorf("value %q, want b", got.Value)
	}
	if err := s.SetSetting(ctx, store.Setting{Name: "big", Value: strings.Repeat("x", store.MaxSetting+1)}); err == nil || !errors.Is(err, store.ErrInvalid) {
		t.Errorf("an oversized value: %v", err)
	}
	if err := s.SetSetting(ctx, store.Setting{Name: "a/b", Value: "x"}); err == nil {
		t.Error("a setting name with a slash was accepted")
	}
}
