// Package statetest gives other packages' tests a real, throwaway store.
// A real bbolt file in t.TempDir() is cheap (a few milliseconds) and keeps
// tests honest about resourceVersions, conflicts and watch semantics, which
// a hand-written fake would have to re-implement.
package statetest

import (
	"path/filepath"
	"testing"

	"github.com/vmdhq/vmd/internal/state"
)

// Open returns a store in a fresh temporary directory, closed when the test
// ends. It fails the test if the store cannot be opened.
func Open(tb testing.TB, opts state.Options) *state.Bolt {
	tb.Helper()
	s, err := state.Open(filepath.Join(tb.TempDir(), state.DefaultFileName), opts)
	if err != nil {
		tb.Fatalf("opening test store: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("closing test store: %v", err)
		}
	})
	return s
}
