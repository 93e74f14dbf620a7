//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// Binaries are built once per test process and shared by every test.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func buildBinaries() (string, error) {
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "vmd-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, cmd := range []string{"vmd", "vmctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "../../cmd/"+cmd).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("building %s: %w\n%s", cmd, err, out)
				return
			}
		}
	})
	return binDir, buildErr
}

// vmdHarness runs the real vmd inside a lab and drives it with the real
// vmctl binary, as a user would.
type vmdHarness struct {
	t        *testing.T
	l        *lab.Lab
	bin      string
	Socket   string
	StateDir string
	// args are passed to every start of vmd, after the lab's own.
	args []string
}

// newVMD prepares (but does not start) vmd in l: state and socket in the
// lab's directory, libvirt and domain type from the lab, extra flags in args.
func newVMD(t *testing.T, l *lab.Lab, args ...string) *vmdHarness {
	t.Helper()
	bin, err := buildBinaries()
	if err != nil {
		t.Fatal(err)
	}
	domainType, err := l.DomainType(t.Context())
	if err != nil {
		t.Fatalf("deciding domain type: %v", err)
	}
	h := &vmdHarness{t: t, l: l, bin: bin, Socket: filepath.Join(l.Dir, "vmd.sock"), StateDir: filepath.Join(l.Dir, "vmd")}
	h.args = append([]string{"--state-dir", h.StateDir, "--socket", h.Socket, "--libvirt-uri", l.URI,
		"--domain-type", domainType, "--log-level", "debug"}, args...)
	return h
}

// Start starts vmd as a lab process called name and waits until it
// answers; its log is printed when the test fails.
func (h *vmdHarness) Start(name string) *lab.Process {
	h.t.Helper()
	p, err := h.l.StartProcess(name, append([]string{filepath.Join(h.bin, "vmd")}, h.args...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if h.t.Failed() {
			if b, err := os.ReadFile(p.LogPath); err == nil {
				h.t.Logf("%s log:\n%s", name, b)
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := h.Vmctl("version"); err == nil {
			return p
		} else if time.Now().After(deadline) || p.Exited() {
			h.t.Fatalf("vmd did not come up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Vmctl runs vmctl against this vmd and returns its combined output.
func (h *vmdHarness) Vmctl(args ...string) (string, error) {
	cmd := exec.CommandContext(context.WithoutCancel(h.t.Context()), filepath.Join(h.bin, "vmctl"), args...)
	cmd.Env = append(os.Environ(), "VMD_SOCKET="+h.Socket)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vmctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustVmctl is Vmctl failing the test on error.
func (h *vmdHarness) MustVmctl(args ...string) string {
	h.t.Helper()
	out, err := h.Vmctl(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// tinyExternalPool is the external IP pool of the tiny-guest tests: /32s on the lab namespace's
// end of the veth to the client namespace, inside that link's on-link subnet, so the client
// ARPs for them.
const tinyExternalPool = "10.78.0.100-10.78.0.110"

// labDNS is where vmd's gateway DNS forwarder relays guest queries to in the tiny-guest tests:
// a loopback address of the lab namespace (TestNetwork serves names there; without a server the
// forwarder just gets no answer).
const labDNS = "127.0.0.1:5353"

// writeTinyConfig writes a vmd configuration for tests with the tiny guest: kernel boot of the
// lab's tiny image (vmd's test-only testing.kernelBoot knob), its console READY line as the
// guest-ready marker, tenant networks with the lab's veth to the client as the uplink,
// tinyExternalPool as external IPs and labDNS as the upstream resolver. It returns the file's path.
func writeTinyConfig(t *testing.T, l *lab.Lab) string {
	t.Helper()
	tiny := l.Images[images.Tiny]
	cfg := fmt.Sprintf(`instances:
  shutdownTimeout: 5s
network:
  uplink: vmdlab-up
  externalPool: %s
  dnsUpstreams: ["%s"]
testing:
  kernelBoot:
    kernel: %s
    initrd: %s
    cmdline: "console=ttyS0,115200n8 net.ifnames=0 panic=-1 quiet"
  guestReadyMarker: "VMDLAB-TINY: READY"
`, tinyExternalPool, labDNS, tiny.Path(images.KernelFile), tiny.Path(images.InitrdFile))
	path := filepath.Join(l.Dir, "vmd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveGoldenDebian12 makes the lab's image server offer its debian12 image as the golden image
// debian-12: vmd's --image-mirror fetches golden image NAME as NAME.qcow2.
func serveGoldenDebian12(t *testing.T, l *lab.Lab) {
	t.Helper()
	www := filepath.Join(l.Dir, "www")
	target, err := os.Readlink(filepath.Join(www, "debian12.qcow2"))
	if err != nil {
		t.Fatalf("reading the lab's image link: %v", err)
	}
	if err := os.Symlink(target, filepath.Join(www, "debian-12.qcow2")); err != nil {
		t.Fatal(err)
	}
}
