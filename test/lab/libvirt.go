package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmdhq/vmd/test/images"
)

// anchorName is the process that holds the lab's private mount namespace open. It is started
// inside the lab network namespace by `unshare --mount`, mounts libvirt's private directories and
// then sleeps; libvirtd, virtlogd and every Exec'd command enter its namespaces with nsenter.
const anchorName = "mount-anchor"

// privateDirs maps the host directories libvirt keeps state in to the lab's copies (under
// Dir/libvirt/). /run/libvirt becomes a fresh tmpfs instead: sockets and pid files of a host
// libvirtd stay invisible, and ours stay invisible to it.
var privateDirs = []struct{ host, lab string }{
	{"/etc/libvirt", "etc"},
	{"/var/lib/libvirt", "lib"},
	{"/var/cache/libvirt", "cache"},
	{"/var/log/libvirt", "log"},
}

// libvirtdSettings are appended to the private libvirtd.conf; %s is the socket directory.
const libvirtdSettings = `
# vmd lab: the sockets live under the lab's run directory so clients in any namespace can use
# qemu+unix:///system?socket=...; only root can reach them (the directory is root's).
unix_sock_dir = "%s"
auth_unix_ro = "none"
auth_unix_rw = "none"
`

// qemuSettings are appended to the private qemu.conf. qemu runs as root with no relabelling:
// the cached base images are shared by every lab and must never be chowned, and the lab's run
// directory is private to root.
const qemuSettings = `
# vmd lab
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
`

// unprivilegedQemuSettings replace qemuSettings when Options.QemuUser is set; %q are the user
// and its group. dynamic_ownership is libvirt's default: each file a domain uses is chowned to
// the user when it starts and back to root:root when it stops (remember_owner = 0: the lab's
// files are all root's, and recording owners in xattrs would also touch the shared image cache).
// The DAC driver works with security_driver "none", which only leaves out SELinux/AppArmor.
const unprivilegedQemuSettings = `
# vmd lab: qemu unprivileged
user = %q
group = %q
dynamic_ownership = 1
remember_owner = 0
security_driver = "none"
`

// qemuConf is what the lab appends to the private qemu.conf.
func (l *Lab) qemuConf() (string, error) {
	if l.qemuUser == "" {
		return qemuSettings, nil
	}
	u, err := user.Lookup(l.qemuUser)
	if err != nil {
		return "", fmt.Errorf("qemu user: %w", err)
	}
	gid := u.Gid
	// On a stock host qemu's group (kvm) owns /dev/kvm. Where another group does, libvirt
	// finds KVM unusable by qemu's user, so it throws away its cached qemu capabilities and
	// probes again (about 100 s under TCG here) at every define and start. The group owning
	// /dev/kvm keeps the lab as a stock host is.
	if st, err := os.Stat("/dev/kvm"); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			gid = strconv.FormatUint(uint64(sys.Gid), 10)
		}
	}
	g, err := user.LookupGroupId(gid)
	if err != nil {
		return "", fmt.Errorf("group %s for qemu user %s: %w", gid, l.qemuUser, err)
	}
	return fmt.Sprintf(unprivilegedQemuSettings, u.Username, g.Name), nil
}

// startLibvirt prepares libvirt's private configuration and state, starts the mount anchor,
// virtlogd and libvirtd, and waits until libvirtd answers on URI.
func (l *Lab) startLibvirt(ctx context.Context) error {
	base := filepath.Join(l.Dir, "libvirt")
	for _, d := range privateDirs {
		if err := os.MkdirAll(filepath.Join(base, d.lab), 0o755); err != nil {
			return fmt.Errorf("creating private %s: %w", d.host, err)
		}
	}
	etc := filepath.Join(base, "etc")
	if err := copyLibvirtConfig(ctx, etc); err != nil {
		return err
	}
	if err := appendFile(filepath.Join(etc, "libvirtd.conf"), fmt.Sprintf(libvirtdSettings, filepath.Join(l.Dir, "sock"))); err != nil {
		return err
	}
	qconf, err := l.qemuConf()
	if err != nil {
		return err
	}
	if err := appendFile(filepath.Join(etc, "qemu.conf"), qconf); err != nil {
		return err
	}

	capsDir := filepath.Join(base, "cache", "qemu", "capabilities")
	l.seedCapabilities(capsDir)
	if err := l.startAnchor(ctx, base); err != nil {
		return err
	}
	virtlogd, err := l.StartProcess("virtlogd", "virtlogd", "--pid-file", filepath.Join(l.Dir, "pids", "virtlogd.daemon.pid"))
	if err != nil {
		return err
	}
	// libvirtd connects to virtlogd when it starts a domain; wait for its socket first.
	sock := filepath.Join("/proc", fmt.Sprint(l.anchorPID()), "root", "run", "libvirt", "virtlogd-sock")
	if err := waitFor(ctx, 20*time.Second, virtlogd, func() bool { _, err := os.Stat(sock); return err == nil }); err != nil {
		return fmt.Errorf("waiting for virtlogd: %w", err)
	}
	libvirtd, err := l.StartProcess("libvirtd", "libvirtd", "--pid-file", filepath.Join(l.Dir, "pids", "libvirtd.daemon.pid"))
	if err != nil {
		return err
	}
	err = waitFor(ctx, 60*time.Second, libvirtd, func() bool {
		_, err := l.Virsh(ctx, "version")
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("waiting for libvirtd: %w; log:\n%s", err, tailFile(libvirtd.LogPath, 15))
	}
	l.saveCapabilities(capsDir)
	return nil
}

// capabilitiesCache is the directory, in the image cache, where the qemu capabilities libvirtd
// probed are kept between labs. Probing costs about 9 s per libvirtd start here; libvirtd
// checks every cached entry against the qemu binary, its own binary, the kernel and the CPU
// microcode and probes again when anything changed, so a seeded entry is never stale.
func (l *Lab) capabilitiesCache() string {
	dir := filepath.Join(l.cache.Dir(), "libvirt-qemu-capabilities")
	if l.qemuUser != "" {
		// Probed as another user: kept apart, or each kind of lab would invalidate the
		// other's entries.
		dir += "-" + l.qemuUser
	}
	return dir
}

// seedCapabilities copies the cached capabilities into the new libvirtd's cache directory.
// Failures only cost time, so they are logged, not returned.
func (l *Lab) seedCapabilities(dst string) {
	files, _ := filepath.Glob(filepath.Join(l.capabilitiesCache(), "*.xml"))
	if len(files) == 0 {
		return
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		l.logf("lab: seeding qemu capabilities: %v", err)
		return
	}
	for _, f := range files {
		if err := copyFile(f, filepath.Join(dst, filepath.Base(f))); err != nil {
			l.logf("lab: seeding qemu capabilities: %v", err)
		}
	}
}

// saveCapabilities stores what libvirtd probed for the next lab, each file written under a
// temporary name and renamed, so concurrent labs never read a partial file.
func (l *Lab) saveCapabilities(src string) {
	files, _ := filepath.Glob(filepath.Join(src, "*.xml"))
	if len(files) == 0 {
		return
	}
	dst := l.capabilitiesCache()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		l.logf("lab: saving qemu capabilities: %v", err)
		return
	}
	for _, f := range files {
		target := filepath.Join(dst, filepath.Base(f))
		tmp := fmt.Sprintf("%s.%s.tmp", target, l.Name)
		err := copyFile(f, tmp)
		if err == nil {
			err = os.Rename(tmp, target)
		}
		if err != nil {
			_ = os.Remove(tmp)
			l.logf("lab: saving qemu capabilities: %v", err)
		}
	}
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o600)
}

// copyLibvirtConfig copies the host's daemon configuration files (/etc/libvirt/*.conf and the
// packaged nwfilter rules) into dst, and nothing else: the host's persistent domains, networks,
// pools and hook scripts must not exist in the lab. An autostart domain of a host libvirtd would
// otherwise boot a second time, on the same disks; the packaged "default" network would start a
// dnsmasq and virbr0 in the lab.
func copyLibvirtConfig(ctx context.Context, dst string) error {
	entries, err := os.ReadDir("/etc/libvirt")
	if err != nil {
		return fmt.Errorf("reading /etc/libvirt: %w", err)
	}
	for _, e := range entries {
		src := filepath.Join("/etc/libvirt", e.Name())
		switch {
		case e.Type().IsRegular():
			if err := copyFile(src, filepath.Join(dst, e.Name())); err != nil {
				return fmt.Errorf("copying libvirt configuration: %w", err)
			}
		case e.IsDir() && e.Name() == "nwfilter":
			if out, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
				return fmt.Errorf("copying %s: %w: %s", src, err, out)
			}
		}
	}
	return nil
}

// startAnchor starts the process that creates and holds the private mount namespace, and
// waits until its mounts are in place.
func (l *Lab) startAnchor(ctx context.Context, base string) error {
	ready := filepath.Join(l.Dir, "mounts.ready")
	var script strings.Builder
	script.WriteString("set -e\nmkdir -p /run/libvirt\nmount -t tmpfs -o mode=0755 vmdlab-run /run/libvirt\n")
	for _, d := range privateDirs {
		fmt.Fprintf(&script, "mkdir -p %s\nmount --bind %s %s\n", d.host, filepath.Join(base, d.lab), d.host)
	}
	script.WriteString("mkdir -p /var/lib/libvirt/qemu /var/log/libvirt/qemu /var/cache/libvirt/qemu\n")
	fmt.Fprintf(&script, ": > %s\nexec sleep infinity\n", ready)
	// ip netns exec and unshare both exec (no fork), so the pid we get is the sleeping shell.
	cmd := exec.Command("ip", "netns", "exec", l.Name,
		"unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script.String())
	anchor, err := l.startProcess(anchorName, cmd)
	if err != nil {
		return err
	}
	err = waitFor(ctx, 10*time.Second, anchor, func() bool { _, err := os.Stat(ready); return err == nil })
	if err != nil {
		return fmt.Errorf("preparing libvirt's mount namespace: %w; log:\n%s", err, tailFile(anchor.LogPath, 10))
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", anchor.PID()))
	if self == theirs || theirs == "" {
		return fmt.Errorf("mount anchor pid %d is not in a private mount namespace", anchor.PID())
	}
	return nil
}

// startImageServer serves Dir/www, which links to the image artifacts, with busybox httpd on
// 127.0.0.1 inside the lab, and waits until it answers.
func (l *Lab) startImageServer(ctx context.Context) error {
	www := filepath.Join(l.Dir, "www")
	links := map[string]string{}
	if img, ok := l.Images[images.Debian12]; ok {
		links["debian12.qcow2"] = img.Path(images.DiskFile)
	}
	if img, ok := l.Images[images.Tiny]; ok {
		links["tiny-vmlinuz"] = img.Path(images.KernelFile)
		links["tiny-initrd.img"] = img.Path(images.InitrdFile)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(www, name)); err != nil {
			return err
		}
	}
	httpd, err := l.StartProcess("httpd", "busybox", "httpd", "-f", "-p", httpAddr, "-h", www)
	if err != nil {
		return err
	}
	client := l.HTTPClient(InLab)
	return waitFor(ctx, 10*time.Second, httpd, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, l.HTTPBase+"tiny-vmlinuz", nil)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// HTTPClient returns an HTTP client whose connections are made from the given side's network
// namespace (see Dial): for the image server, and later for vmd's API.
func (l *Lab) HTTPClient(side Side) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, side, network, addr)
			},
			DisableKeepAlives: true,
		},
	}
}

// Virsh runs virsh against the lab's libvirtd and returns its standard output.
func (l *Lab) Virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-q", "-c", l.URI}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (l *Lab) libvirtdRunning() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.daemons {
		if p.Name == "libvirtd" {
			return !p.Exited()
		}
	}
	return false
}

// teardownLibvirt removes everything defined in the lab's libvirtd: domains (running ones are
// destroyed), storage pools with their volumes, and networks; vmd will create all three. Single
// steps are best effort (a test may be removing the same object concurrently); what counts is
// that nothing is listed afterwards.
func (l *Lab) teardownLibvirt(ctx context.Context) error {
	domains, _ := l.virshNames(ctx, "list", "--all", "--name")
	for _, d := range domains {
		_, _ = l.Virsh(ctx, "destroy", d)
		_, _ = l.Virsh(ctx, "undefine", d, "--nvram", "--managed-save", "--snapshots-metadata")
	}
	pools, _ := l.virshNames(ctx, "pool-list", "--all", "--name")
	for _, p := range pools {
		_, _ = l.Virsh(ctx, "pool-start", p) // volumes can only be deleted from an active pool
		vols, _ := l.virshNames(ctx, "vol-list", "--pool", p, "--name")
		for _, v := range vols {
			_, _ = l.Virsh(ctx, "vol-delete", "--pool", p, v)
		}
		_, _ = l.Virsh(ctx, "pool-destroy", p)
		_, _ = l.Virsh(ctx, "pool-undefine", p)
	}
	networks, _ := l.virshNames(ctx, "net-list", "--all", "--name")
	for _, n := range networks {
		_, _ = l.Virsh(ctx, "net-destroy", n)
		_, _ = l.Virsh(ctx, "net-undefine", n)
	}
	var errs []error
	for _, kind := range []struct{ what, list string }{
		{"domains", "list"}, {"storage pools", "pool-list"}, {"networks", "net-list"},
	} {
		left, err := l.virshNames(ctx, kind.list, "--all", "--name")
		if err != nil {
			errs = append(errs, err)
		} else if len(left) > 0 {
			errs = append(errs, fmt.Errorf("%s left: %s", kind.what, strings.Join(left, " ")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tearing down libvirt objects: %w", err)
	}
	return nil
}

func (l *Lab) virshNames(ctx context.Context, args ...string) ([]string, error) {
	out, err := l.Virsh(ctx, args...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// waitFor polls cond until it holds, p exits (an error), or timeout or ctx end.
func waitFor(ctx context.Context, timeout time.Duration, p *Process, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if p != nil && p.Exited() {
			if p.err != nil {
				return fmt.Errorf("%s exited: %w", p.Name, p.err)
			}
			return fmt.Errorf("%s exited", p.Name)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
