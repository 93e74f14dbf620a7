//go:build integration

package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

// The integration tier runs the adapter against a real libvirtd in the
// lab (root, libvirt and qemu needed; it skips with the reason
// otherwise): go test -tags integration ./internal/hypervisor/libvirt/
// Set VMD_LAB_DOMAIN_TYPE=qemu to skip the lab's KVM probe on hosts
// without working KVM.

// eventLog collects what Conn.Events delivers, for assertions on order
// and content.
type eventLog struct {
	mu     sync.Mutex
	events []LifecycleEvent
	added  chan struct{}
}

func collectEvents(t *testing.T, c *Conn) *eventLog {
	el := &eventLog{added: make(chan struct{}, 1)}
	go func() {
		for ev := range c.Events() {
			t.Logf("event: %s %s/%s uid=%q", ev.Name, ev.Type, ev.Detail, ev.UID)
			el.mu.Lock()
			el.events = append(el.events, ev)
			el.mu.Unlock()
			select {
			case el.added <- struct{}{}:
			default:
			}
		}
	}()
	return el
}

// mark returns the current position, so waits only see later events.
func (el *eventLog) mark() int {
	el.mu.Lock()
	defer el.mu.Unlock()
	return len(el.events)
}

// wait returns the first event at or after from matching name and type.
func (el *eventLog) wait(t *testing.T, from int, name string, typ EventType, timeout time.Duration) LifecycleEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		el.mu.Lock()
		for _, ev := range el.events[min(from, len(el.events)):] {
			if ev.Name == name && ev.Type == typ {
				el.mu.Unlock()
				return ev
			}
		}
		el.mu.Unlock()
		select {
		case <-el.added:
		case <-deadline:
			t.Fatalf("no %s event for %q within %s", typ, name, timeout)
		}
	}
}

// tinyDomain is a domain vmd's own builder produces for a small custom
// VMInstance, turned into a direct kernel boot of the lab's tiny image
// (the test's only change to the builder's XML).
type tinyDomain struct {
	Name, UID, XML string
	DataDisk       string // qcow2 path
	DataTarget     string // its target dev in the domain
	SerialLog      string
}

func buildTiny(t *testing.T, l *lab.Lab, domainType, vmName string, generation int64) tinyDomain {
	t.Helper()
	dir := filepath.Join(l.Dir, "guests", "adapter-"+vmName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := tinyDomain{
		Name:      hypervisor.DomainName(vmName),
		UID:       "uid-" + vmName + "-0001",
		DataDisk:  filepath.Join(dir, "data.qcow2"),
		SerialLog: filepath.Join(dir, "serial.log"),
	}
	if _, err := os.Stat(d.DataDisk); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", d.DataDisk, "64M").CombinedOutput(); err != nil {
			t.Fatalf("creating data disk: %v: %s", err, out)
		}
	}
	res, err := hypervisor.BuildDomain(hypervisor.DomainSpec{
		Name:          d.Name,
		UUID:          hypervisor.StableUUID("tenant-test", vmName, ""),
		Namespace:     "tenant-test",
		VMName:        vmName,
		UID:           d.UID,
		Generation:    generation,
		Type:          domainType,
		VCPUs:         1,
		MemoryBytes:   256 << 20,
		Disks:         []hypervisor.DiskSpec{{Path: d.DataDisk, Format: hypervisor.DiskFormatQCOW2}},
		SerialLogPath: d.SerialLog,
	})
	if err != nil {
		t.Fatalf("building domain: %v", err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(res.XML); err != nil {
		t.Fatalf("parsing built domain: %v", err)
	}
	img := l.Images[images.Tiny]
	dom.OS.Kernel = img.Path(images.KernelFile)
	dom.OS.Initrd = img.Path(images.InitrdFile)
	dom.OS.Cmdline = "console=ttyS0,115200n8 panic=-1"
	for _, disk := range dom.Devices.Disks {
		if disk.Source != nil && disk.Source.File != nil && disk.Source.File.File == d.DataDisk {
			d.DataTarget = disk.Target.Dev
		}
	}
	if d.DataTarget == "" {
		t.Fatalf("built domain has no disk for %s:\n%s", d.DataDisk, res.XML)
	}
	if d.XML, err = dom.Marshal(); err != nil {
		t.Fatal(err)
	}
	return d
}

// qemuPID returns the pid of the domain's qemu process from libvirt's pid
// file inside the lab's mount namespace, checked against its command line.
func qemuPID(t *testing.T, ctx context.Context, l *lab.Lab, name string) int {
	t.Helper()
	out, err := l.Run(ctx, lab.InLab, "cat", "/run/libvirt/qemu/"+name+".pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("parsing qemu pid %q: %v", out, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("guest="+name)) {
		t.Fatalf("pid %d is not the qemu of %s (%v): %q", pid, name, err, cmdline)
	}
	return pid
}

// libvirtdPID returns the lab's libvirtd pid, checked against its name.
func libvirtdPID(t *testing.T, l *lab.Lab) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(l.Dir, "pids", "libvirtd.daemon.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "libvirtd" {
		t.Fatalf("pid %d is not libvirtd (%v): %q", pid, err, comm)
	}
	return pid
}

func waitGone(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pid %d still alive after %s", pid, timeout)
}

var errReadTimeout = errors.New("timed out")

// readUntil reads r until want appears or timeout passes, returning what
// was read.
func readUntil(r io.Reader, want string, timeout time.Duration) (string, error) {
	type chunk struct {
		b   []byte
		err error
	}
	ch := make(chan chunk, 16)
	go func() {
		for {
			buf := make([]byte, 1024)
			n, err := r.Read(buf)
			ch <- chunk{buf[:n], err}
			if err != nil {
				return
			}
		}
	}()
	var got strings.Builder
	deadline := time.After(timeout)
	for {
		select {
		case c := <-ch:
			got.Write(c.b)
			if strings.Contains(got.String(), want) {
				return got.String(), nil
			}
			if c.err != nil {
				return got.String(), c.err
			}
		case <-deadline:
			return got.String(), fmt.Errorf("no %q within %s: %w", want, timeout, errReadTimeout)
		}
	}
}

func TestConnAgainstLibvirtd(t *testing.T) {
	if reason := lab.HostProblem(); reason != "" {
		t.Skipf("vmd lab unavailable: %s", reason)
	}
	l := lab.New(t, lab.Options{Images: []images.Name{images.Tiny}})
	ctx := t.Context()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, l.URI, nil)
	if err != nil {
		t.Fatalf("opening: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("closing twice: %v", err)
		}
	})
	events := collectEvents(t, c)
	d := buildTiny(t, l, domainType, "web", 3)
	t.Cleanup(func() { // the lab tears down only what the first libvirtd knows
		cctx := context.Background()
		_ = c.Destroy(cctx, d.Name)
		_ = c.Undefine(cctx, d.Name)
	})

	t.Run("errors", func(t *testing.T) {
		err := c.Start(ctx, "vm-instance-absent")
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.HasPrefix(err.Error(), "starting domain vm-instance-absent: ") {
			t.Errorf("Start(absent) = %v, want ErrNotFound with context", err)
		}
		err = c.Define(ctx, strings.Replace(d.XML, "<memory", "<memory bogus='x'", 1))
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Define(schema-invalid xml) = %v, want ErrInvalid", err)
		}
		if _, err := c.Metadata(ctx, "vm-instance-absent"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Metadata(absent) = %v, want ErrNotFound", err)
		}
		if err := c.ResizeDisk(ctx, "vm-instance-absent", "sda", 1<<30); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("ResizeDisk(absent) = %v, want ErrNotFound", err)
		}
	})

	t.Run("define", func(t *testing.T) {
		from := events.mark()
		for i := range 2 {
			if err := c.Define(ctx, d.XML); err != nil {
				t.Fatalf("Define #%d: %v", i+1, err)
			}
		}
		ev := events.wait(t, from, d.Name, EventDefined, 10*time.Second)
		if ev.Detail != "added" {
			t.Errorf("first define event detail = %q, want added", ev.Detail)
		}
		st, err := c.State(ctx, d.Name)
		if err != nil || !st.Exists || st.Running || st.State != "shutoff" {
			t.Fatalf("State after define = %+v, %v; want existing, shut off", st, err)
		}
	})

	var console io.ReadWriteCloser
	t.Run("start", func(t *testing.T) {
		from := events.mark()
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatalf("Start: %v", err)
		}
		// Attach at once: a pty console only carries what is written
		// while someone is attached.
		if console, err = c.OpenConsole(ctx, d.Name, false); err != nil {
			t.Fatalf("OpenConsole: %v", err)
		}
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatalf("Start of a running domain: %v", err)
		}
		ev := events.wait(t, from, d.Name, EventStarted, 10*time.Second)
		if ev.Detail != "booted" || ev.UID != d.UID {
			t.Errorf("start event = %+v, want booted with uid %s", ev, d.UID)
		}
		st, err := c.State(ctx, d.Name)
		if err != nil || !st.Running || st.State != "running" || st.Reason != "booted" {
			t.Errorf("State = %+v, %v; want running/booted", st, err)
		}
	})

	t.Run("console", func(t *testing.T) {
		if console == nil {
			t.Skip("no console (start failed)")
		}
		if _, err := c.OpenConsole(ctx, d.Name, false); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("second OpenConsole without force = %v, want ErrConflict", err)
		}
		out, err := readUntil(console, "VMDLAB-TINY: READY", 60*time.Second)
		if err != nil {
			t.Fatalf("reading console: %v; got:\n%s", err, out)
		}
		// A forced session takes over; the first one ends.
		forced, err := c.OpenConsole(ctx, d.Name, true)
		if err != nil {
			t.Fatalf("OpenConsole with force: %v", err)
		}
		// libvirt ends the displaced session with "stream had I/O failure".
		if _, err := readUntil(console, "\x00never", 10*time.Second); err == nil || errors.Is(err, errReadTimeout) {
			t.Errorf("displaced console read = %v, want the stream's end", err)
		}
		if err := console.Close(); err != nil {
			t.Errorf("closing displaced console: %v", err)
		}
		if _, err := forced.Write([]byte("\n")); err != nil {
			t.Errorf("writing to console: %v", err)
		}
		if err := forced.Close(); err != nil {
			t.Errorf("closing console: %v", err)
		}
	})

	t.Run("metadata", func(t *testing.T) {
		owner, err := c.Metadata(ctx, d.Name)
		want := hypervisor.DomainOwner{Namespace: "tenant-test", Name: "web", UID: d.UID, Generation: 3}
		if err != nil || owner != want {
			t.Fatalf("Metadata = %+v, %v; want %+v", owner, err, want)
		}
		// A redefinition with a new generation changes the definition, not
		// the running instance: List shows both.
		next := buildTiny(t, l, domainType, "web", 4)
		if err := c.Define(ctx, next.XML); err != nil {
			t.Fatalf("redefining: %v", err)
		}
		// A domain without vmd metadata is not listed.
		foreign := strings.Replace(strings.Replace(d.XML, d.Name, "foreign", 1), "<metadata>", "<metadata><x:other xmlns:x='urn:x'/>", 1)
		foreign = strings.ReplaceAll(foreign, hypervisor.MetadataNamespace, "urn:not-vmd")
		foreign = strings.Replace(foreign, hypervisor.StableUUID("tenant-test", "web", ""), "11111111-2222-4333-9444-555555555555", 1)
		if err := c.Define(ctx, foreign); err != nil {
			t.Fatalf("defining foreign domain: %v", err)
		}
		t.Cleanup(func() { _ = c.Undefine(context.Background(), "foreign") })
		list, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 {
			t.Fatalf("List = %+v, want only %s", list, d.Name)
		}
		got := list[0]
		if got.Name != d.Name || got.Owner != want || got.DefinedGeneration != 4 || !got.Running || got.State != "running" {
			t.Errorf("List[0] = %+v, want %s running with generation 3, defined 4", got, d.Name)
		}
	})

	t.Run("resize", func(t *testing.T) {
		const size = 96 << 20
		for i := range 2 {
			if err := c.ResizeDisk(ctx, d.Name, d.DataTarget, size); err != nil {
				t.Fatalf("ResizeDisk #%d: %v", i+1, err)
			}
		}
		out, err := exec.Command("qemu-img", "info", "-U", "--output=json", d.DataDisk).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte(fmt.Sprintf(`"virtual-size": %d`, size))) {
			t.Errorf("qemu-img info after resize:\n%s\nwant virtual-size %d", out, size)
		}
		if err := c.ResizeDisk(ctx, d.Name, d.DataTarget, 32<<20); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("shrinking = %v, want ErrInvalid", err)
		}
	})

	// Stop kinds, as libvirt reports them; logged for the record.
	t.Run("shutdown", func(t *testing.T) {
		from := events.mark()
		const timeout = 5 * time.Second
		start := time.Now()
		if err := c.Shutdown(ctx, d.Name, timeout); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		took := time.Since(start)
		ev := events.wait(t, from, d.Name, EventStopped, 10*time.Second)
		st, _ := c.State(ctx, d.Name)
		t.Logf("STOP KIND acpi shutdown: took %s, event Stopped/%s, state %s/%s", took.Round(time.Millisecond), ev.Detail, st.State, st.Reason)
		switch ev.Detail {
		case StopDestroyed: // the tiny guest has no acpid: the fallback fired
			if took < timeout {
				t.Errorf("destroyed after %s, before the %s timeout", took, timeout)
			}
		case StopShutdown:
		default:
			t.Errorf("stop detail = %q, want shutdown or destroyed", ev.Detail)
		}
		if ev.Failure() || st.Running {
			t.Errorf("shutdown: failure=%v, state %+v", ev.Failure(), st)
		}
		if err := c.Shutdown(ctx, d.Name, timeout); err != nil {
			t.Errorf("Shutdown of a stopped domain: %v", err)
		}
	})

	t.Run("kill qemu", func(t *testing.T) {
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		pid := qemuPID(t, ctx, l, d.Name)
		from := events.mark()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ev := events.wait(t, from, d.Name, EventStopped, 20*time.Second)
		st, err := c.State(ctx, d.Name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("STOP KIND kill -9 qemu: event Stopped/%s, state %s/%s", ev.Detail, st.State, st.Reason)
		if ev.Detail != StopFailed || !ev.Failure() || st.Reason != "crashed" {
			t.Errorf("kill -9: event %s/%s failure=%v state %s/%s; want Stopped/failed, shutoff/crashed",
				ev.Type, ev.Detail, ev.Failure(), st.State, st.Reason)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		from := events.mark()
		for i := range 2 {
			if err := c.Destroy(ctx, d.Name); err != nil {
				t.Fatalf("Destroy #%d: %v", i+1, err)
			}
		}
		ev := events.wait(t, from, d.Name, EventStopped, 10*time.Second)
		st, _ := c.State(ctx, d.Name)
		t.Logf("STOP KIND destroy: event Stopped/%s, state %s/%s", ev.Detail, st.State, st.Reason)
		if ev.Detail != StopDestroyed || ev.Failure() || st.Reason != "destroyed" {
			t.Errorf("destroy: event detail %q failure=%v state %+v", ev.Detail, ev.Failure(), st)
		}
	})

	t.Run("shutdown paused", func(t *testing.T) {
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Virsh(ctx, "suspend", d.Name); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Shutdown(ctx, d.Name, time.Minute); err != nil {
			t.Fatalf("Shutdown of a paused domain: %v", err)
		}
		st, err := c.State(ctx, d.Name)
		t.Logf("STOP KIND acpi shutdown of a paused domain: took %s, state %s/%s", time.Since(start).Round(time.Millisecond), st.State, st.Reason)
		if err != nil || st.Running || time.Since(start) > 20*time.Second {
			t.Errorf("paused domain: state %+v, %v after %s; want stopped without waiting for the timeout", st, err, time.Since(start))
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		pid := libvirtdPID(t, l)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid, 10*time.Second)
		from := events.mark()
		// While libvirtd is down, calls wait for it (bounded by ctx).
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := c.State(short, d.Name)
		cancel()
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("State while libvirtd is down = %v, want ErrUnavailable", err)
		}
		if _, err := l.StartProcess("libvirtd-restarted", "libvirtd", "--pid-file",
			filepath.Join(l.Dir, "pids", "libvirtd.daemon.pid")); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
		defer wcancel()
		st, err := c.State(wctx, d.Name)
		if err != nil || !st.Running {
			t.Fatalf("State after libvirtd restart = %+v, %v; want the domain still running", st, err)
		}
		events.wait(t, from, "", EventReconnected, 30*time.Second)
		// Events flow on the new connection. (A Stopped event after
		// Destroy is not proof: when qemu's exit wins the race against
		// the destroy job, libvirt 9.0 reports "domain is not running"
		// and sends no event at all — seen once here after a restart.)
		if err := c.Destroy(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		if st, err := c.State(ctx, d.Name); err != nil || st.Running {
			t.Fatalf("State after Destroy = %+v, %v", st, err)
		}
		from = events.mark()
		if err := c.Start(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
		if ev := events.wait(t, from, d.Name, EventStarted, 10*time.Second); ev.UID != d.UID {
			t.Errorf("event after reconnect: %+v", ev)
		}
		if err := c.Destroy(ctx, d.Name); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		caps, err := c.Capabilities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("capabilities: %+v", caps)
		if caps.CPUs != runtime.NumCPU() {
			t.Errorf("CPUs = %d, want %d", caps.CPUs, runtime.NumCPU())
		}
	})

	t.Run("undefine", func(t *testing.T) {
		from := events.mark()
		for i := range 2 {
			if err := c.Undefine(ctx, d.Name); err != nil {
				t.Fatalf("Undefine #%d: %v", i+1, err)
			}
		}
		events.wait(t, from, d.Name, EventUndefined, 10*time.Second)
		st, err := c.State(ctx, d.Name)
		if err != nil || st.Exists {
			t.Errorf("State after undefine = %+v, %v; want absent", st, err)
		}
		if err := c.Destroy(ctx, d.Name); err != nil {
			t.Errorf("Destroy of an absent domain: %v", err)
		}
		if err := c.Shutdown(ctx, d.Name, time.Second); err != nil {
			t.Errorf("Shutdown of an absent domain: %v", err)
		}
	})
}
