package v1alpha1

import (
	"strings"
	"testing"
)

func TestQuantityParseBounds(t *testing.T) {
	tests := []struct {
		name    string
		in      Quantity
		wantErr string
		want    int64
	}{
		{name: "binary suffix", in: "4Gi", want: 4 << 30},
		{name: "exa suffix is not an exponent", in: "1E", want: 1_000_000_000_000_000_000},
		{name: "exbi suffix", in: "1Ei", want: 1 << 60},
		{name: "small exponent", in: "5e3", want: 5000},
		{name: "exponent at the bound", in: "1e30"},
		{name: "huge exponent (fuzz finding)", in: "9223372036E54775807", wantErr: "exponent 54775807 is out of range"},
		{name: "huge negative exponent", in: "1e-999", wantErr: "out of range"},
		{name: "overlong", in: Quantity(strings.Repeat("1", 65)), wantErr: "longer than 64"},
		{name: "garbage", in: "4 GB", wantErr: "quantities must match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := tc.in.Parse()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if tc.want != 0 && q.Value() != tc.want {
				t.Fatalf("Parse(%q) = %d, want %d", tc.in, q.Value(), tc.want)
			}
		})
	}
}
