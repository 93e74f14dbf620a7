package libvirt

import (
	"context"
	"fmt"
	"slices"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// HostCapabilities is what the host can offer domains, from libvirt's
// capabilities XML: the inputs of the hugepages and dedicated-CPU
// conditions.
type HostCapabilities struct {
	// CPUs is the number of logical host CPUs.
	CPUs int
	// HugepageSizesKiB are the huge page sizes the CPU supports (2048,
	// 1048576 on x86_64), ascending; the base page size is left out.
	HugepageSizesKiB []uint64
	// HugepagesKiB maps each huge page size to the number of pages of
	// that size reserved on the host (summed over NUMA cells). A size the
	// CPU supports but with no pages reserved is absent: domains asking
	// for it would fail to start.
	HugepagesKiB map[uint64]uint64
}

// Capabilities reads the host's capabilities from libvirtd.
func (c *Conn) Capabilities(ctx context.Context) (HostCapabilities, error) {
	var caps HostCapabilities
	err := c.do(ctx, "reading host capabilities", func(conn *libvirt.Connect) error {
		raw, err := conn.GetCapabilities()
		if err != nil {
			return err
		}
		caps, err = parseCapabilities(raw)
		return err
	})
	return caps, err
}

// parseCapabilities extracts HostCapabilities from libvirt's capabilities
// XML.
func parseCapabilities(raw string) (HostCapabilities, error) {
	var doc libvirtxml.Caps
	if err := doc.Unmarshal(raw); err != nil {
		return HostCapabilities{}, fmt.Errorf("parsing capabilities: %w", err)
	}
	out := HostCapabilities{HugepagesKiB: map[uint64]uint64{}}
	host := doc.Host

	// Page sizes: the first one the CPU lists is the base page.
	var base uint64
	if host.CPU != nil {
		for i, p := range host.CPU.PageSizes {
			kib, err := toKiB(p.Size, p.Unit)
			if err != nil {
				return HostCapabilities{}, fmt.Errorf("parsing capabilities: cpu pages: %w", err)
			}
			if i == 0 {
				base = kib
				continue
			}
			out.HugepageSizesKiB = append(out.HugepageSizesKiB, kib)
		}
	}
	slices.Sort(out.HugepageSizesKiB)

	// CPUs and reserved huge pages per NUMA cell.
	if host.NUMA != nil && host.NUMA.Cells != nil {
		for _, cell := range host.NUMA.Cells.Cells {
			if cell.CPUS != nil {
				out.CPUs += int(cell.CPUS.Num)
			}
			for _, p := range cell.PageInfo {
				kib, err := toKiB(p.Size, p.Unit)
				if err != nil {
					return HostCapabilities{}, fmt.Errorf("parsing capabilities: cell %d pages: %w", cell.ID, err)
				}
				if kib != base && p.Count > 0 {
					out.HugepagesKiB[kib] += p.Count
				}
			}
		}
	}
	// Without a NUMA topology (some containers), fall back to the CPU
	// topology.
	if out.CPUs == 0 && host.CPU != nil && host.CPU.Topology != nil {
		t := host.CPU.Topology
		out.CPUs = max(t.Sockets, 1) * max(t.Dies, 1) * max(t.Clusters, 1) * t.Cores * t.Threads
	}
	return out, nil
}

// toKiB converts a libvirt page size to KiB.
func toKiB(size int, unit string) (uint64, error) {
	if size < 0 {
		return 0, fmt.Errorf("negative size %d", size)
	}
	n := uint64(size)
	switch unit {
	case "b", "bytes":
		return n / 1024, nil
	case "", "KiB", "k", "K":
		return n, nil
	case "MiB", "M", "m":
		return n << 10, nil
	case "GiB", "G", "g":
		return n << 20, nil
	}
	return 0, fmt.Errorf("unknown unit %q", unit)
}
