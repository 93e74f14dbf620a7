package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/hypervisor"
	"github.com/vmdhq/vmd/internal/server"
)

// domainAccess is what the access adapter needs from the driver. It is
// not part of hypervisor.Driver: the controller never opens consoles or
// displays.
type domainAccess interface {
	OpenConsole(ctx context.Context, domainName string, force bool) (io.ReadWriteCloser, error)
	VNCSocket(ctx context.Context, domainName string) (string, error)
}

// OpenConsole attaches to a domain's serial console (see
// libvirt.Conn.OpenConsole).
func (d *libvirtDriver) OpenConsole(ctx context.Context, domainName string, force bool) (io.ReadWriteCloser, error) {
	return d.conn.OpenConsole(ctx, domainName, force)
}

// OpenConsole attaches to a domain's serial console once libvirt is
// connected (errdefs.ErrUnavailable before).
func (l *lazyDriver) OpenConsole(ctx context.Context, domainName string, force bool) (io.ReadWriteCloser, error) {
	d, err := l.get()
	if err != nil {
		return nil, err
	}
	return d.OpenConsole(ctx, domainName, force)
}

// VNCSocket finds the running domain's VNC socket (see
// libvirt.Conn.VNCSocket).
func (d *libvirtDriver) VNCSocket(ctx context.Context, domainName string) (string, error) {
	return d.conn.VNCSocket(ctx, domainName)
}

// VNCSocket finds the running domain's VNC socket once libvirt is
// connected (errdefs.ErrUnavailable before).
func (l *lazyDriver) VNCSocket(ctx context.Context, domainName string) (string, error) {
	d, err := l.get()
	if err != nil {
		return "", err
	}
	return d.VNCSocket(ctx, domainName)
}

// access implements server.Access on the hypervisor driver and the
// per-instance directories the VMInstance reconciler writes.
type access struct {
	// instancesDir is the controller's InstancesDir: each VM's files are
	// in <instancesDir>/<namespace>/<name>/.
	instancesDir string
	domains      domainAccess // nil: the driver has no consoles or displays
}

var _ server.Access = (*access)(nil)

// newAccess builds the server's Access port. drv provides consoles and
// VNC displays when it has them (the libvirt driver); otherwise those
// answer errdefs.ErrNotImplemented while the serial log still works.
func newAccess(cfg *config.Config, drv hypervisor.Driver) server.Access {
	a := &access{instancesDir: cfg.InstancesDir()}
	if c, ok := drv.(domainAccess); ok {
		a.domains = c
	}
	return a
}

// Console implements server.Access.
func (a *access) Console(ctx context.Context, ns, name string, force bool) (io.ReadWriteCloser, error) {
	if a.domains == nil {
		return nil, fmt.Errorf("opening console of vminstance %q: no hypervisor: %w", name, errdefs.ErrNotImplemented)
	}
	if err := checkName(ns, name); err != nil {
		return nil, err
	}
	return a.domains.OpenConsole(ctx, hypervisor.LibvirtName(ns, name), force)
}

// SerialLog implements server.Access.
func (a *access) SerialLog(_ context.Context, ns, name string) (string, error) {
	dir, err := a.dir(ns, name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "serial.log"), nil
}

// VNCSocket implements server.Access. libvirt places the socket (see
// hypervisor.DomainSpec.VNCAutoSocket), so the running domain is asked.
func (a *access) VNCSocket(ctx context.Context, ns, name string) (string, error) {
	if a.domains == nil {
		return "", fmt.Errorf("finding the VNC display of vminstance %q: no hypervisor: %w", name, errdefs.ErrNotImplemented)
	}
	if err := checkName(ns, name); err != nil {
		return "", err
	}
	p, err := a.domains.VNCSocket(ctx, hypervisor.LibvirtName(ns, name))
	if err != nil {
		return "", fmt.Errorf("vminstance %q: %w", name, err)
	}
	return p, nil
}

// dir is a VM's directory. It duplicates the join of the unexported
// controller.InstanceReconciler.paths (file name serial.log): both MUST
// change together.
func (a *access) dir(ns, name string) (string, error) {
	if err := checkName(ns, name); err != nil {
		return "", err
	}
	return filepath.Join(a.instancesDir, ns, name), nil
}

// checkName refuses names that would leave the instances directory. API
// validation already forbids them; this keeps a path built from request
// parameters safe on its own.
func checkName(ns, name string) error {
	for _, s := range []string{ns, name} {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, `/\`) {
			return fmt.Errorf("vminstance %s/%s: invalid name: %w", ns, name, errdefs.ErrInvalid)
		}
	}
	return nil
}
