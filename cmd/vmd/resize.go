package main

import (
	"context"

	"github.com/vmdhq/vmd/internal/hypervisor"
)

var (
	_ hypervisor.DiskResizer = (*libvirtDriver)(nil)
	_ hypervisor.DiskResizer = (*lazyDriver)(nil)
)

// ResizeDisk implements hypervisor.DiskResizer.
func (d *libvirtDriver) ResizeDisk(ctx context.Context, domainName, target string, bytes uint64) error {
	return d.conn.ResizeDisk(ctx, domainName, target, bytes)
}

// ResizeDisk implements hypervisor.DiskResizer once libvirt is connected
// (errdefs.ErrUnavailable before).
func (l *lazyDriver) ResizeDisk(ctx context.Context, domainName, target string, bytes uint64) error {
	d, err := l.get()
	if err != nil {
		return err
	}
	return d.ResizeDisk(ctx, domainName, target, bytes)
}
