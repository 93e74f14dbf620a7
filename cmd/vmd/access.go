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

// consoleOpener is what the access adapter needs from the driver. It is
// not part of hypervisor.Driver: the controller never opens consoles.
type consoleOpener interface {
	OpenConsole(ctx context.Context, domainName string, force bool) (io.ReadWriteCloser, error)
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

// access implements server.Access on the hypervisor driver and the
// per-instance directories the VMInstance reconciler writes.
type access struct {
	// instancesDir is the controller's InstancesDir: each VM's files are
	// in <instancesDir>/<namespace>/<name>/.
	instancesDir string
	consoles     consoleOpener // nil: the driver has no consoles
}

var _ server.Access = (*access)(nil)

// newAccess builds the server's Access port. drv provides consoles when
// it can open them (the libvirt driver); otherwise Console answers
// errdefs.ErrNotImplemented while the log and VNC still work.
func newAccess(cfg *config.Config, drv hypervisor.Driver) server.Access {
	a := &access{instancesDir: cfg.InstancesDir()}
	if c, ok := drv.(consoleOpener); ok {
		a.consoles = c
	}
	return a
}

// Console implements server.Access.
func (a *access) Console(ctx context.Context, ns, name string, force bool) (io.ReadWriteCloser, error) {
	if a.consoles == nil {
		return nil, fmt.Errorf("opening console of vminstance %q: no hypervisor: %w", name, errdefs.ErrNotImplemented)
	}
	if err := checkName(ns, name); err != nil {
		return nil, err
	}
	return a.consoles.OpenConsole(ctx, hypervisor.LibvirtName(ns, name), force)
}

// SerialLog implements server.Access.
func (a *access) SerialLog(_ context.Context, ns, name string) (string, error) {
	dir, err := a.dir(ns, name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "serial.log"), nil
}

// VNCSocket implements server.Access.
func (a *access) VNCSocket(_ context.Context, ns, name string) (string, error) {
	dir, err := a.dir(ns, name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "vnc.sock"), nil
}

// dir is a VM's directory. It duplicates the join of the unexported
// controller.InstanceReconciler.paths (file names serial.log, vnc.sock):
// both MUST change together.
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
