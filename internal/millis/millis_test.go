package millis

import (
	"testing"
	"time"
)

func TestOf(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want float64
	}{{0, 0}, {1500 * time.Microsecond, 1.5}, {2 * time.Second, 2000}, {999 * time.Nanosecond, 0}} {
		if got := Of(tt.d); got != tt.want {
			t.Errorf("Of(%v) = %v, want %v", tt.d, got, tt.want)
		}
	}
	if s := Since(time.Now().Add(-time.Second)); s < 1000 || s > 60000 {
		t.Errorf("Since a second ago = %v", s)
	}
}
