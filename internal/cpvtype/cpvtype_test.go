package cpvtype_test

import (
	"testing"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

func TestIsGUID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"00000000-0000-4000-8000-000000000001", true},
		{"ABCDEF01-abcd-4EF0-8000-0123456789aB", true},
		{"", false},
		{"00000000-0000-4000-8000-00000000000", false},   // 35 characters
		{"00000000-0000-4000-8000-0000000000001", false}, // 37 characters
		{"{0000000-0000-4000-8000-000000000001", false},
		{"00000000x0000-4000-8000-000000000001", false}, // a separator that is not a hyphen
		{"0000000g-0000-4000-8000-000000000001", false}, // not hexadecimal
		{"000000000000-4000-8000-0000000000001", false}, // hyphen moved
		{"contoso.onmicrosoft.com", false},
	}
	for _, tt := range tests {
		if got := cpvtype.IsGUID(tt.in); got != tt.want {
			t.Errorf("IsGUID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
