package hypervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"testing"
)

func TestStableUUID(t *testing.T) {
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-9[0-9a-f]{3}-[0-9a-f]{12}$`)
	tests := []struct {
		name, ns, vm, seed string
	}{
		{name: "no seed", ns: "tenant-a", vm: "web"},
		{name: "with seed", ns: "tenant-a", vm: "web", seed: "2"},
		{name: "other namespace", ns: "tenant-b", vm: "web"},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := StableUUID(tc.ns, tc.vm, tc.seed)
			if !uuidRE.MatchString(got) {
				t.Fatalf("StableUUID = %q, not a version-4/variant-9 UUID", got)
			}
			// Independent re-derivation of the chart's recipe.
			sum := sha256.Sum256([]byte(tc.ns + "-vm-instance-" + tc.vm + "-" + tc.seed))
			h := hex.EncodeToString(sum[:])
			want := h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-9" + h[17:20] + "-" + h[20:32]
			if got != want {
				t.Fatalf("StableUUID = %q, want %q", got, want)
			}
			if prev, dup := seen[got]; dup {
				t.Fatalf("same UUID as %s", prev)
			}
			seen[got] = tc.name
		})
	}
}
