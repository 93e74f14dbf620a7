package libvirt

import (
	"context"
	"encoding/xml"
	"fmt"

	"libvirt.org/go/libvirt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// VNCSocket returns the path of the unix socket the running domain's VNC
// display listens on, read from its live XML. vmd defines domains with a
// socket listener without a path (hypervisor.DomainSpec.VNCAutoSocket):
// libvirt then places the socket in its per-domain directory, which it
// gives to qemu's user, so only the live definition knows the path. A
// domain that is not running is ErrConflict; one without a VNC socket (a
// loopback-port display, or none) is ErrNotFound.
func (c *Conn) VNCSocket(ctx context.Context, name string) (string, error) {
	var path string
	err := c.do(ctx, "finding the VNC socket of domain "+name, func(conn *libvirt.Connect) error {
		return withDomain(conn, name, func(dom *libvirt.Domain) error {
			active, err := dom.IsActive()
			if err != nil {
				return err
			}
			if !active {
				return fmt.Errorf("domain is not running: %w", errdefs.ErrConflict)
			}
			doc, err := dom.GetXMLDesc(0)
			if err != nil {
				return err
			}
			p, err := vncSocketOf(doc)
			if err != nil {
				return err
			}
			path = p
			return nil
		})
	})
	return path, err
}

// liveGraphics is the part of a domain's XML vncSocketOf reads.
type liveGraphics struct {
	Graphics []struct {
		Type string `xml:"type,attr"`
		// Socket is the legacy attribute form of a socket listener, which
		// libvirt still fills in the live XML beside <listen>.
		Socket  string `xml:"socket,attr"`
		Listens []struct {
			Type   string `xml:"type,attr"`
			Socket string `xml:"socket,attr"`
		} `xml:"listen"`
	} `xml:"devices>graphics"`
}

// vncSocketOf finds the first VNC unix socket path in a live domain XML.
func vncSocketOf(domainXML string) (string, error) {
	var d liveGraphics
	if err := xml.Unmarshal([]byte(domainXML), &d); err != nil {
		return "", fmt.Errorf("parsing live domain XML: %w", err)
	}
	for _, g := range d.Graphics {
		if g.Type != "vnc" {
			continue
		}
		for _, l := range g.Listens {
			if l.Type == "socket" && l.Socket != "" {
				return l.Socket, nil
			}
		}
		if g.Socket != "" {
			return g.Socket, nil
		}
	}
	return "", fmt.Errorf("no VNC display on a unix socket: %w", errdefs.ErrNotFound)
}
