package main

// The whole-daemon test: the real vmd composition (state, registry,
// server, controller) with in-memory fakes behind the host ports, driven
// by the real vmctl binary through the real unix socket.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/hypervisor/hypervisortest"
	"github.com/vmdhq/vmd/internal/storage"
	"github.com/vmdhq/vmd/internal/storage/storagetest"
)

var vmctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmd-daemon-test-")
	if err != nil {
		panic(err)
	}
	vmctlBin = filepath.Join(dir, "vmctl")
	out, err := exec.Command("go", "build", "-o", vmctlBin, "../vmctl").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic("building vmctl: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running vmd.
type daemon struct {
	t      *testing.T
	cfg    *config.Config
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t *testing.T, stateDir string, ad adapters) *daemon {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = stateDir
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be long.
	sockDir, err := os.MkdirTemp("", "vmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg.Socket = filepath.Join(sockDir, "vmd.sock")
	cfg.Controller.Workers = 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	d := &daemon{t: t, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() { d.done <- run(ctx, cfg, ad, log, ready) }()
	select {
	case <-ready:
	case err := <-d.done:
		t.Fatalf("vmd exited during start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("vmd did not become ready")
	}
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Errorf("vmd stopped with error: %v", err)
		}
	case <-time.After(10 * time.Second):
		d.t.Error("vmd did not stop within 10s")
	}
}

// vmctl runs the CLI against the daemon and returns stdout, stderr and
// the exit code.
func (d *daemon) vmctl(args ...string) (string, string, int) {
	d.t.Helper()
	cmd := exec.Command(vmctlBin, args...)
	cmd.Env = append(os.Environ(), "VMD_SOCKET="+d.cfg.Socket)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatalf("running vmctl: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

func (d *daemon) mustVmctl(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.vmctl(args...)
	if code != 0 {
		d.t.Fatalf("vmctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// httpClient talks raw HTTP to the daemon's socket, to check status codes.
func (d *daemon) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.cfg.Socket)
		},
	}}
}

const example = "../../examples/vm.yaml"

func TestWholeDaemonWithFakes(t *testing.T) {
	state := t.TempDir()
	volumes, domains := storagetest.New(), hypervisortest.New()
	volumes.ImportSteps = 3 // the golden-image disk reports progress before Ready
	d := startDaemon(t, state, adapters{volumes: volumes, driver: domains})

	// Socket permissions: 0660 by default.
	fi, err := os.Stat(d.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %o, want 660", fi.Mode().Perm())
	}

	out := d.mustVmctl("apply", "-f", example)
	for _, want := range []string{"vmdisk/web-system created", "vmdisk/web-data created", "vminstance/web created"} {
		if !strings.Contains(out, want) {
			t.Fatalf("apply output lacks %q:\n%s", want, out)
		}
	}
	out = d.mustVmctl("apply", "-f", example)
	if strings.Count(out, "unchanged") != 3 {
		t.Fatalf("re-apply should leave all three unchanged:\n%s", out)
	}

	out = d.mustVmctl("wait", "vmi/web", "--for=condition=Ready", "--timeout=30s")
	if !strings.Contains(out, "condition met") {
		t.Fatalf("wait output: %q", out)
	}
	out = d.mustVmctl("get", "vmi,vmd")
	for _, want := range []string{"web", "Running", "u1.medium", "web-system", "web-data", "Ready"} {
		if !strings.Contains(out, want) {
			t.Fatalf("get output lacks %q:\n%s", want, out)
		}
	}
	dom, ok := domains.Get("default.vm-instance-web")
	var x libvirtxml.Domain
	if !ok || !dom.Running || x.Unmarshal(dom.XML) != nil {
		t.Fatalf("fake domain not defined and running: %+v (exists %v)", dom, ok)
	}
	// Two VMDisks plus the cloud-init seed (the example has sshKeys).
	if x.VCPU == nil || x.VCPU.Value != 1 || x.Memory == nil || x.Memory.Value != 4<<20 || len(x.Devices.Disks) != 3 {
		t.Fatalf("fake domain not built from the spec:\n%s", dom.XML)
	}
	// The system disk is an overlay on the golden base: the domain names
	// the base itself, so libvirt never hands it to this VM's qemu.
	if bs := x.Devices.Disks[0].BackingStore; bs == nil || bs.Source == nil || bs.Source.File == nil ||
		bs.Source.File.File != "/fake/images/debian-12.qcow2" || len(bs.Source.File.SecLabel) != 1 || bs.Source.File.SecLabel[0].Relabel != "no" {
		t.Fatalf("system disk's backing store = %+v, want the golden base without relabelling:\n%s", bs, dom.XML)
	}
	if _, err := os.Stat(filepath.Join(state, "instances", "default", "web", "cidata.iso")); err != nil {
		t.Fatalf("no cloud-init seed: %v", err)
	}
	// The access subresources are wired to the VM's files: vmctl logs
	// prints the serial log (virtlogd writes it on a real host).
	serial := filepath.Join(state, "instances", "default", "web", "serial.log")
	if err := os.WriteFile(serial, []byte("login: \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := d.mustVmctl("logs", "web"); out != "login: \n" {
		t.Fatalf("vmctl logs web = %q, want the serial log", out)
	}

	// kill -9 of the guest's qemu: the event wakes the controller, which
	// restarts it (runStrategy Always) without waiting for a resync.
	domains.Crash("default.vm-instance-web")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if dom, _ := domains.Get("default.vm-instance-web"); dom.Running && dom.Starts == 2 {
			break
		}
		if time.Now().After(deadline) {
			dom, _ := domains.Get("default.vm-instance-web")
			t.Fatalf("crashed domain not restarted: %+v", dom)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The VM's lifecycle is told as events, as kubectl describe shows them.
	deadline = time.Now().Add(10 * time.Second)
	for {
		out = d.mustVmctl("describe", "vmi", "web")
		if strings.Contains(out, "Restarted") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"Events:", "Defined", "Started", "Crashed", "Restarted", "runStrategy Always restarted domain default.vm-instance-web"} {
		if !strings.Contains(out, want) {
			t.Fatalf("describe vmi lacks %q:\n%s", want, out)
		}
	}

	// Growing the data disk of the running VM goes through the hypervisor
	// (online, the guest sees it), not the storage adapter.
	grown := filepath.Join(t.TempDir(), "grown.yaml")
	b, _ := os.ReadFile(example)
	if err := os.WriteFile(grown, bytes.Replace(b, []byte("storage: 20Gi"), []byte("storage: 30Gi"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustVmctl("apply", "-f", grown)
	deadline = time.Now().Add(10 * time.Second)
	for len(domains.Resizes()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r := domains.Resizes(); len(r) != 1 || r[0].Domain != "default.vm-instance-web" || r[0].Bytes != 30<<30 {
		t.Fatalf("online resizes %+v, want one of web-data to 30Gi", r)
	}
	d.mustVmctl("wait", "vmd/web-data", "--for=jsonpath={.status.size}=32212254720", "--timeout=10s")
	if out := d.mustVmctl("describe", "vmd", "web-data"); !strings.Contains(out, "online, through running vminstance web") {
		t.Fatalf("describe vmd lacks the online growth event:\n%s", out)
	}

	// A change to the spec is "configured" and bumps generation.
	changed := filepath.Join(t.TempDir(), "vm.yaml")
	b, _ = os.ReadFile(grown)
	if err := os.WriteFile(changed, bytes.Replace(b, []byte("instanceType: u1.medium"), []byte("instanceType: u1.large"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out = d.mustVmctl("apply", "-f", changed)
	if !strings.Contains(out, "vminstance/web configured") {
		t.Fatalf("apply after edit: %s", out)
	}

	// Invalid input: every field error with its path, exit 1, nothing stored.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: bad
spec:
  instanceType: u1.huge
  externalPorts: [70000]
  colour: blue
`), 0o600)
	_, errOut, code := d.vmctl("apply", "-f", bad)
	if code == 0 {
		t.Fatal("invalid manifest applied")
	}
	for _, want := range []string{"spec.instanceType", "u1.huge", "spec.externalPorts[0]", "spec.colour"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("error output lacks %q:\n%s", want, errOut)
		}
	}
	if _, _, code := d.vmctl("get", "vmi", "bad"); code == 0 {
		t.Fatal("rejected object was stored")
	}

	// Optimistic concurrency: a PUT with a stale resourceVersion is 409.
	hc := d.httpClient()
	url := "http://vmd/apis/apps.cozystack.io/v1alpha1/namespaces/default/vmdisks/web-data"
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	var disk v1alpha1.VMDisk
	if err := json.NewDecoder(resp.Body).Decode(&disk); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	put := func(d v1alpha1.VMDisk) int {
		body, _ := json.Marshal(d)
		req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	fresh := disk
	fresh.ObjectMeta.Labels = map[string]string{"tier": "data"}
	if code := put(fresh); code != http.StatusOK {
		t.Fatalf("fresh PUT: %d", code)
	}
	stale := disk
	stale.ObjectMeta.Labels = map[string]string{"tier": "stale"}
	if code := put(stale); code != http.StatusConflict {
		t.Fatalf("stale PUT: got %d, want 409", code)
	}

	// Restart on the same state dir: objects and status survive.
	d.stop()
	d = startDaemon(t, state, adapters{volumes: volumes, driver: domains})
	out = d.mustVmctl("get", "vmi", "web", "-o", "json")
	var vm v1alpha1.VMInstance
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	if vm.Status.Phase != v1alpha1.PhaseRunning || vm.ObjectMeta.Generation != 2 {
		t.Fatalf("after restart: phase %q generation %d", vm.Status.Phase, vm.ObjectMeta.Generation)
	}

	// Delete waits for the controller to release host resources.
	d.mustVmctl("delete", "-f", example, "--timeout=30s")
	out = d.mustVmctl("get", "vmi,vmd", "-o", "name")
	if strings.TrimSpace(out) != "" {
		t.Fatalf("objects left after delete:\n%s", out)
	}
	if domains.Len() != 0 || volumes.Len() != 0 {
		t.Fatalf("host resources left: %d domains, %d volumes", domains.Len(), volumes.Len())
	}
}

// Without host adapters, status must say so rather than pretend.
func TestDaemonReportsNotImplementedHonestly(t *testing.T) {
	d := startDaemon(t, t.TempDir(), adapters{volumes: storage.NotImplemented{}, driver: hypervisor.NotImplemented{}})
	d.mustVmctl("apply", "-f", example)
	_, errOut, code := d.vmctl("wait", "vmi/web", "--for=condition=Ready", "--timeout=2s")
	if code == 0 {
		t.Fatalf("a VM reported Ready without a hypervisor: %s", errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := d.mustVmctl("get", "vmd", "web-data", "-o", "json")
		var disk v1alpha1.VMDisk
		if err := json.Unmarshal([]byte(out), &disk); err != nil {
			t.Fatal(err)
		}
		c := v1alpha1.FindCondition(disk.Status.Conditions, v1alpha1.ConditionReady)
		if c != nil {
			if c.Status != v1alpha1.ConditionFalse || c.Reason != "NotImplemented" || disk.Status.Phase != v1alpha1.DiskPhasePending {
				t.Fatalf("disk status not honest: phase %q, %+v", disk.Status.Phase, c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("disk never got a Ready condition")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := d.mustVmctl("get", "vmi", "web", "-o", "json")
	var vm v1alpha1.VMInstance
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		t.Fatal(err)
	}
	if vm.Status.Phase == v1alpha1.PhaseRunning {
		t.Fatal("VM pretends to run")
	}
	// Deleting still works: nothing was created, so nothing blocks it.
	d.mustVmctl("delete", "-f", example, "--timeout=30s")
}

// vmctl start|stop|restart drive a Manual VM through the real server and
// controller; the other strategies refuse start/stop with a clear message.
func TestDaemonPowerVerbs(t *testing.T) {
	domains := hypervisortest.New()
	d := startDaemon(t, t.TempDir(), adapters{volumes: storagetest.New(), driver: domains})
	manifest := filepath.Join(t.TempDir(), "vm.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: apps.cozystack.io/v1alpha1
kind: VMInstance
metadata:
  name: man
spec:
  runStrategy: Manual
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustVmctl("apply", "-f", manifest)
	const dom = "default.vm-instance-man"
	waitDomain := func(what string, ok func(hypervisortest.Domain) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if got, _ := domains.Get(dom); ok(got) {
				return
			}
			if time.Now().After(deadline) {
				got, _ := domains.Get(dom)
				t.Fatalf("%s: domain %+v", what, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitDomain("defined, not started", func(g hypervisortest.Domain) bool { return g.Defines > 0 && !g.Running && g.Starts == 0 })
	if out := d.mustVmctl("start", "man"); !strings.Contains(out, "vminstance/man start requested") {
		t.Fatalf("start output %q", out)
	}
	d.mustVmctl("wait", "vmi/man", "--for=condition=Ready", "--timeout=10s")
	d.mustVmctl("restart", "man")
	waitDomain("restarted", func(g hypervisortest.Domain) bool { return g.Running && g.Starts == 2 })
	d.mustVmctl("stop", "man")
	waitDomain("stopped", func(g hypervisortest.Domain) bool { return !g.Running })

	d.mustVmctl("apply", "-f", example)
	_, errOut, code := d.vmctl("stop", "web")
	if code == 0 || !strings.Contains(errOut, "runStrategy Manual") {
		t.Fatalf("stop of an Always VM: code %d, %q", code, errOut)
	}
}

// With libvirtd unreachable, vmd still serves its API, imports disks, and
// says on each instance why it cannot define the domain.
func TestDaemonServesWhileLibvirtIsDown(t *testing.T) {
	cfg := config.Default()
	cfg.LibvirtURI = "qemu+unix:///system?socket=" + filepath.Join(t.TempDir(), "no-libvirtd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drv := startDriver(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer drv.Close()
	if err := drv.Define(ctx, "<domain/>"); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no-libvirtd.sock") {
		t.Fatalf("Define before connecting = %v, want ErrUnavailable naming the URI", err)
	}

	d := startDaemon(t, t.TempDir(), adapters{volumes: storagetest.New(), driver: drv})
	d.mustVmctl("apply", "-f", example)
	d.mustVmctl("wait", "vmd/web-data", "--for=condition=Ready", "--timeout=30s")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := d.mustVmctl("get", "vmi", "web", "-o", "json")
		var vm v1alpha1.VMInstance
		if err := json.Unmarshal([]byte(out), &vm); err != nil {
			t.Fatal(err)
		}
		c := v1alpha1.FindCondition(vm.Status.Conditions, v1alpha1.ConditionReady)
		if c != nil && c.Status == v1alpha1.ConditionFalse && strings.Contains(c.Message, "connecting to libvirt") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance status never named the libvirt problem: %+v", vm.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
