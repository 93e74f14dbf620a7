// Package nettest holds what the network integration tests share: the
// root/tool gate and throwaway network namespaces. Every test that touches
// the kernel's network state does so inside a namespace made here, never
// in the root namespace.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips the test unless it runs as root and every tool named
// is on PATH, saying which requirement is missing.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// Run runs a command and returns its combined output, failing the test
// (with the output) when it fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNetns runs a command inside the named network namespace.
func InNetns(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", name}, args...)...)
}

// AddNetns creates a network namespace named prefix + 8 random hex
// characters, deleted when the test ends, and returns its name.
func AddNetns(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := prefix + hex.EncodeToString(b)
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// NewNetns is AddNetns plus an open file descriptor of the namespace
// (closed at cleanup), for libraries that take a netns fd.
func NewNetns(t testing.TB, prefix string) (string, int) {
	t.Helper()
	name := AddNetns(t, prefix)
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return name, int(f.Fd())
}
