// Package lab runs real virtual machines for vmd's end-to-end tests, isolated from the host.
//
// A Lab is a throwaway network namespace named "vmdlab-<8 hex>" holding:
//
//   - a bridge (Bridge, 10.77.0.1/24) that guests attach to;
//   - virtlogd and libvirtd, started inside the namespace and inside a private mount namespace with
//     their own /run/libvirt, /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and
//     /var/log/libvirt, so they share nothing with a libvirtd the host may run; clients reach
//     libvirtd through URI (a unix socket on a path under Dir);
//   - an HTTP server on 127.0.0.1 inside the namespace serving the lab images (HTTPBase), the way
//     vmd will download images in production;
//   - a veth to a second namespace, the "client" ("vmdlab-<id>-client", 10.78.0.2), that plays the
//     outside world: traffic from it to guests is routed through the lab namespace.
//
// Everything the lab starts is recorded by PID and removed by Close: domains, storage pools and
// volumes, networks, processes, namespaces and the run directory. Close runs from t.Cleanup, from a
// SIGINT/SIGTERM handler, and leftovers of a killed run are removed by the next Start (or by
// `test/lab/vmlab.sh cleanup`), recognised by the "vmdlab-" prefix and a dead owner process.
//
// Later tests start vmd inside the lab with Lab.StartProcess and point it at URI and HTTPBase.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vmdhq/vmd/test/images"
)

// Prefix starts the name of every namespace and run directory a lab creates; cleanup of
// leftovers keys on it.
const Prefix = "vmdlab-"

// KeepEnv names the environment variable that, set to 1, keeps a failed test's lab running
// for inspection (remove it later with `vmlab.sh cleanup`).
const KeepEnv = "VMD_LAB_KEEP"

// Fixed addressing inside every lab. Each lab has its own namespaces, so concurrent labs can
// reuse the same addresses without seeing each other.
var (
	// Network is the guest subnet on the lab bridge.
	Network = netip.MustParsePrefix("10.77.0.0/24")
	// Gateway is the bridge address inside the lab namespace: default route and DNS of guests.
	Gateway = netip.MustParseAddr("10.77.0.1")
	// UplinkAddr is the lab namespace's end of the veth to the client namespace.
	UplinkAddr = netip.MustParseAddr("10.78.0.1")
	// ClientAddr is the client namespace's address; it routes Network via UplinkAddr.
	ClientAddr = netip.MustParseAddr("10.78.0.2")
)

const (
	bridgeName = "vmdlabbr0"
	uplinkDev  = "vmdlab-up"   // veth end in the lab namespace
	clientDev  = "vmdlab-down" // veth end in the client namespace
	uplinkLen  = 24
	httpAddr   = "127.0.0.1:8000"
)

// Side selects the namespace a command or connection runs in.
type Side int

const (
	// InLab is the lab namespace: it sees the bridge, the guests, libvirtd and the HTTP server.
	InLab Side = iota
	// InClient is the client namespace: it reaches guests only through the veth and the routing
	// (and any firewall) of the lab namespace, like a machine outside the host would.
	InClient
)

func (s Side) String() string {
	if s == InClient {
		return "client"
	}
	return "lab"
}

// Options tunes Start. The zero value is what most tests want.
type Options struct {
	// Images lists the images to build or reuse before the lab starts. Tiny is always included
	// because the domain-type probe boots it. Nil means images.All.
	Images []images.Name
	// Cache builds and holds the images; nil means images.NewCache(images.CacheDir(), Logf).
	Cache *images.Cache
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// QemuUser, when set (e.g. "libvirt-qemu", Debian's default), makes libvirtd run qemu as
	// that user and its primary group, with libvirt's DAC driver giving it each disk, ISO,
	// kernel and NVRAM file of a domain at start and back to root at stop — the way a stock
	// libvirt runs qemu on a production host. Empty runs qemu as root with no relabelling
	// (see qemuSettings), which most tests want.
	QemuUser string
}

// Lab is one running lab. Its exported fields are fixed after Start and describe how to reach
// the lab's services; they are what a vmd under test gets in its configuration.
type Lab struct {
	// Name is the lab network namespace ("vmdlab-<8 hex>"), also the base name of Dir.
	Name string
	// ClientNS is the client network namespace, joined to Name by a veth.
	ClientNS string
	// Dir is the run directory: libvirt's private state, guest files, logs, pid files.
	Dir string
	// URI is the libvirt connection URI of the lab's libvirtd, usable from any namespace:
	// "qemu+unix:///system?socket=<Dir>/sock/libvirt-sock".
	URI string
	// HTTPBase is the URL, reachable only inside the lab namespace, where the images are served:
	// HTTPBase + "debian12.qcow2", "tiny-vmlinuz", "tiny-initrd.img".
	HTTPBase string
	// Bridge is the name of the bridge guests attach to, inside the lab namespace.
	Bridge string
	// Images are the cache entries the lab uses, by name.
	Images map[images.Name]images.Image
	// SSHKeyPath is a fresh ed25519 private key (OpenSSH format) generated for this lab; SSHSigner
	// is the same key for golang.org/x/crypto/ssh and SSHAuthorizedKey its authorized_keys line.
	SSHKeyPath       string
	SSHSigner        ssh.Signer
	SSHAuthorizedKey string

	logf     func(format string, args ...any)
	cache    *images.Cache
	qemuUser string

	mu       sync.Mutex
	anchor   *Process   // holds the mount namespace; every in-lab command enters it
	daemons  []*Process // virtlogd, libvirtd, httpd, then StartProcess ones, in start order
	guests   map[string]*Guest
	seenPIDs map[int]string // every process found in the namespaces at Close, for Leftovers
	kept     bool

	closeOnce sync.Once // concurrent Close calls (test cleanup, signal handler) wait for one teardown
	closeErr  error
}

// New starts a lab for the test and registers its teardown with t.Cleanup. It skips the test
// when the host cannot run one (not root, qemu or libvirt missing) and fails it when setup
// fails. With VMD_LAB_KEEP=1 a failed test leaves the lab running and logs how to reach it.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	if reason := HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.LogDiagnostics()
			if os.Getenv(KeepEnv) == "1" {
				l.keep()
				return
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("closing lab %s: %v", l.Name, err)
		}
	})
	return l
}

// HostProblem returns why this host cannot run a lab, or "" when it can.
func HostProblem() string {
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, loop devices, libvirtd)"
	}
	var missing []string
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return "missing host tools: " + strings.Join(missing, " ") +
			" (install the packages in test/lab/packages.txt)"
	}
	return ""
}

// requiredTools are the host commands a lab runs; the image recipes check their own.
var requiredTools = []string{
	"ip", "unshare", "nsenter", "sysctl", "virtlogd", "libvirtd", "virsh",
	"qemu-system-x86_64", "qemu-img", "genisoimage", "busybox", "bash",
}

// Start builds or reuses the images and brings a lab up. On error everything already created
// is torn down again. Callers own the lab and must Close it; tests use New instead.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if reason := HostProblem(); reason != "" {
		return nil, errors.New(reason)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cache := opts.Cache
	if cache == nil {
		cache = images.NewCache(images.CacheDir(), logf)
	}
	if err := Sweep(ctx, SweepOptions{}, logf); err != nil {
		logf("lab: removing leftovers of earlier runs: %v", err)
	}

	l := &Lab{
		Bridge:   bridgeName,
		Images:   map[images.Name]images.Image{},
		logf:     logf,
		cache:    cache,
		qemuUser: opts.QemuUser,
		guests:   map[string]*Guest{},
	}
	if err := l.ensureImages(ctx, opts.Images); err != nil {
		return nil, err
	}

	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("generating lab id: %w", err)
	}
	l.Name = Prefix + hex.EncodeToString(id)
	l.ClientNS = l.Name + "-client"
	l.Dir = filepath.Join(os.TempDir(), l.Name)
	l.URI = "qemu+unix:///system?socket=" + filepath.Join(l.Dir, "sock", "libvirt-sock")
	l.HTTPBase = "http://" + httpAddr + "/"

	// From here on a failure, a signal or a killed process must not leak anything: the owner
	// file lets Sweep tell a live lab from a leftover (so the directory appears with it, by
	// rename), the registry lets the signal handler act.
	if err := createRunDir(l.Dir); err != nil {
		return nil, err
	}
	register(l)
	start := time.Now()
	if err := l.setUp(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = fmt.Errorf("%w (and tearing down: %w)", err, cerr)
		}
		return nil, err
	}
	logf("lab %s up in %.1fs: libvirt %s, images %s, bridge %s %s/%d, client %s %s",
		l.Name, time.Since(start).Seconds(), l.URI, l.HTTPBase, l.Bridge, Gateway, Network.Bits(),
		l.ClientNS, ClientAddr)
	return l, nil
}

func (l *Lab) ensureImages(ctx context.Context, names []images.Name) error {
	if names == nil {
		names = images.All
	}
	want := []images.Name{images.Tiny}
	for _, n := range names {
		if n != images.Tiny {
			want = append(want, n)
		}
	}
	for _, n := range want {
		img, err := l.cache.Ensure(ctx, n)
		if err != nil {
			return err
		}
		verb := "reused"
		if img.Built {
			verb = "built"
		}
		l.logf("image %s %s in %.1fs: %s", n, verb, img.Duration.Seconds(), img.Dir)
		l.Images[n] = img
	}
	return nil
}

// setUp creates, in order: the namespaces and links, the SSH key, the mount-namespace anchor,
// libvirt's private directories, virtlogd, libvirtd and the image server.
func (l *Lab) setUp(ctx context.Context) error {
	for _, d := range []string{"logs", "pids", "sock", "guests", "www", "ssh"} {
		if err := os.MkdirAll(filepath.Join(l.Dir, d), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	t0 := time.Now()
	if err := l.setUpNetwork(ctx); err != nil {
		return fmt.Errorf("setting up network: %w", err)
	}
	if err := l.generateSSHKey(); err != nil {
		return err
	}
	t1 := time.Now()
	if err := l.startLibvirt(ctx); err != nil {
		return err
	}
	t2 := time.Now()
	if err := l.startImageServer(ctx); err != nil {
		return fmt.Errorf("starting image server: %w", err)
	}
	l.logf("lab %s: network %.1fs, libvirtd %.1fs, image server %.1fs", l.Name,
		t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), time.Since(t2).Seconds())
	return nil
}

// Close tears the lab down: domains, pools, volumes and networks through libvirt, then every
// process by PID (SIGTERM, then SIGKILL), then the namespaces and the run directory. It is
// idempotent and keeps going past errors, returning them joined.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		kept := l.kept
		l.mu.Unlock()
		if !kept {
			l.closeErr = l.teardown()
		}
		unregister(l)
	})
	return l.closeErr
}

func (l *Lab) teardown() error {

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	var errs []error
	if l.libvirtdRunning() {
		errs = append(errs, l.teardownLibvirt(ctx))
	}
	l.mu.Lock()
	daemons := slices.Clone(l.daemons)
	l.mu.Unlock()
	// StartProcess ones first (they may use libvirtd), then httpd, libvirtd, virtlogd.
	for i := len(daemons) - 1; i >= 0; i-- {
		if err := daemons[i].Stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	// qemu and anything else libvirtd spawned: whatever still lives in the namespaces.
	l.seenPIDs = map[int]string{}
	for _, ns := range []string{l.ClientNS, l.Name} {
		pids, err := killNetNSProcesses(ctx, ns, l.anchorPID())
		errs = append(errs, err)
		for _, p := range pids {
			l.seenPIDs[p] = "process in netns " + ns
		}
	}
	if l.anchor != nil {
		errs = append(errs, l.anchor.Stop(stopGrace))
	}
	for _, ns := range []string{l.ClientNS, l.Name} {
		errs = append(errs, deleteNetNS(ctx, ns))
	}
	if err := os.RemoveAll(l.Dir); err != nil {
		errs = append(errs, fmt.Errorf("removing run directory: %w", err))
	}
	l.logf("lab %s torn down in %.1fs", l.Name, time.Since(start).Seconds())
	return errors.Join(errs...)
}

// keep leaves a failed test's lab running and says how to use and remove it.
func (l *Lab) keep() {
	l.mu.Lock()
	l.kept = true
	l.mu.Unlock()
	unregister(l)
	if err := os.WriteFile(filepath.Join(l.Dir, keepFile), nil, 0o644); err != nil {
		l.logf("lab: marking %s as kept: %v", l.Name, err)
	}
	l.logf("%s=1: lab %s left running for inspection.\n"+
		"  virsh -c '%s' list --all\n"+
		"  ip netns exec %s ssh -i %s labuser@<guest ip>\n"+
		"  run directory %s (console logs under guests/, libvirt logs under libvirt/log/)\n"+
		"  remove it with: test/lab/vmlab.sh cleanup --kept %s",
		KeepEnv, l.Name, l.URI, l.Name, l.SSHKeyPath, l.Dir, l.Name)
}

// LogDiagnostics logs what helps explain a failed test: the tail of every guest's serial console
// and qemu log, and of the daemon logs. New calls it for a failed test; call it yourself before
// closing a lab early. It does nothing once the lab is closed (the files are gone).
func (l *Lab) LogDiagnostics() {
	if _, err := os.Stat(l.Dir); err != nil {
		return
	}
	l.mu.Lock()
	guests := make([]*Guest, 0, len(l.guests))
	for _, g := range l.guests {
		guests = append(guests, g)
	}
	l.mu.Unlock()
	for _, g := range guests {
		l.logf("guest %s serial console (%s), last lines:\n%s", g.Name, g.ConsoleLog, g.ConsoleTail(40))
		l.logf("guest %s qemu log: %s\n%s", g.Name, g.QEMULog, tailFile(g.QEMULog, 10))
	}
	for _, p := range l.daemons {
		l.logf("%s log (%s), last lines:\n%s", p.Name, p.LogPath, tailFile(p.LogPath, 15))
	}
}

// Leftovers lists what of a closed lab still exists: namespaces, run directory, processes it
// started or found in its namespaces, or any process mentioning its run directory. Empty means
// the teardown was complete; tests assert exactly that.
func (l *Lab) Leftovers() []string {
	var out []string
	for _, ns := range []string{l.Name, l.ClientNS} {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			out = append(out, "network namespace "+ns)
		}
	}
	if _, err := os.Stat(l.Dir); err == nil {
		out = append(out, "run directory "+l.Dir)
	}
	pids := map[int]string{}
	for pid, what := range l.seenPIDs {
		pids[pid] = what
	}
	for _, p := range append([]*Process{l.anchor}, l.daemons...) {
		if p != nil {
			pids[p.PID()] = p.Name
		}
	}
	for pid, what := range pids {
		if processAlive(pid) {
			out = append(out, fmt.Sprintf("process %d (%s)", pid, what))
		}
	}
	for _, pid := range processesMentioning(l.Dir, l.Name) {
		if _, known := pids[pid]; !known {
			out = append(out, fmt.Sprintf("process %d mentioning %s", pid, l.Name))
		}
	}
	out = append(out, linksNamed(l.Name)...)
	return out
}

// Exec is the hook for running a program inside the lab the way a vmd under test runs: in the
// lab's network namespace and in libvirt's private mount namespace (so it sees the lab's
// /run/libvirt, /etc/libvirt, ...). The command is prepared, not started.
func (l *Lab) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return l.Command(ctx, InLab, name, args...)
}

// Command prepares a command that runs in the given side's namespaces: InLab as Exec does,
// InClient in the client network namespace only.
func (l *Lab) Command(ctx context.Context, side Side, name string, args ...string) *exec.Cmd {
	argv := l.argv(side, name, args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// argv returns the command line that runs name with args on the given side.
func (l *Lab) argv(side Side, name string, args ...string) []string {
	if side == InClient {
		return append([]string{"ip", "netns", "exec", l.ClientNS, name}, args...)
	}
	return append([]string{"nsenter", "--target", fmt.Sprint(l.anchorPID()), "--mount", "--net", "--", name}, args...)
}

// Run runs a command on the given side and returns its combined output; a failure carries the
// output in the error.
func (l *Lab) Run(ctx context.Context, side Side, name string, args ...string) (string, error) {
	out, err := l.Command(ctx, side, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("running %s %s in %s namespace: %w: %s",
			name, strings.Join(args, " "), side, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// StartProcess starts a long-running program inside the lab (as Exec does), with its output in
// Dir/logs/<name>.log. Close stops it by PID before libvirtd, so a vmd started here can still
// talk to libvirt while it shuts down.
func (l *Lab) StartProcess(name string, argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("starting process: empty command")
	}
	full := l.argv(InLab, argv[0], argv[1:]...)
	return l.startProcess(name, exec.Command(full[0], full[1:]...))
}

// NamespacePID returns the pid of the process whose network and mount namespaces Exec enters,
// for people: `nsenter --target <pid> --mount --net bash` opens a shell inside the lab.
func (l *Lab) NamespacePID() int { return l.anchorPID() }

func (l *Lab) anchorPID() int {
	if l.anchor == nil {
		return 0
	}
	return l.anchor.PID()
}
