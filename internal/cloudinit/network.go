package cloudinit

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	yaml "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// NetworkConfig is the guest's network-config file: the subset of netplan
// version 2 that cloud-init's renderers (networkd, ENI, sysconfig, netplan)
// all understand and that vmd needs to give a guest a fixed address on a
// host bridge. Version is always 2 and is added when rendering.
//
// The file is YAML read by cloud-init's PyYAML, a YAML 1.1 parser. Every
// string value is therefore written double-quoted: an unquoted MAC address
// such as 52:54:00:12:34:56 is a base-60 integer to YAML 1.1.
type NetworkConfig struct {
	// Ethernets maps a configuration ID to an interface. cloud-init's
	// networkd renderer matches the interface by Name=<ID> (lab pitfall 5),
	// so the ID should be the name the guest kernel gives the NIC: with
	// net.ifnames=0 the first virtio NIC is eth0. Use Match and SetName to
	// pin the name to a MAC address as well.
	Ethernets map[string]Ethernet `json:"ethernets" yaml:"ethernets"`
}

// Ethernet configures one NIC. Zero values are omitted from the file and
// mean netplan's defaults (no DHCP, kernel default for router
// advertisements, no static address).
type Ethernet struct {
	// Match selects the NIC by MAC address.
	Match *Match `json:"match,omitempty" yaml:"match,omitempty"`
	// SetName renames the matched NIC; it requires Match.
	SetName string `json:"set-name,omitempty" yaml:"set-name,omitempty"`
	// DHCP4 asks for an IPv4 lease.
	DHCP4 bool `json:"dhcp4,omitempty" yaml:"dhcp4,omitempty"`
	// DHCP6 asks for a DHCPv6 lease.
	DHCP6 bool `json:"dhcp6,omitempty" yaml:"dhcp6,omitempty"`
	// AcceptRA, when set, turns IPv6 router advertisements on or off.
	// false saves a static IPv4 guest the ~12 s systemd-networkd waits for
	// an advertisement that never comes (lab pitfall 6).
	AcceptRA *bool `json:"accept-ra,omitempty" yaml:"accept-ra,omitempty"`
	// Addresses are static addresses with their prefix length, as
	// 10.77.0.10/24 (the address, not the network).
	Addresses []netip.Prefix `json:"addresses,omitempty" yaml:"addresses,omitempty"`
	// Routes are static routes; DefaultRoute builds the usual one.
	Routes []Route `json:"routes,omitempty" yaml:"routes,omitempty"`
	// Nameservers are the DNS servers and search domains.
	Nameservers *Nameservers `json:"nameservers,omitempty" yaml:"nameservers,omitempty"`
	// MTU sets the link MTU; 0 keeps the default.
	MTU int `json:"mtu,omitempty" yaml:"mtu,omitempty"`
}

// Match selects a NIC. Only the MAC address is offered: it is the one
// property vmd controls (it writes it into the domain XML).
type Match struct {
	// MACAddress is a 48-bit MAC; it is written in lowercase colon form.
	MACAddress string `json:"macaddress" yaml:"macaddress"`
}

// Route is one static route.
type Route struct {
	// To is the destination network; 0.0.0.0/0 or ::/0 for the default.
	To netip.Prefix `json:"to" yaml:"to"`
	// Via is the gateway, of the same family as To.
	Via netip.Addr `json:"via" yaml:"via"`
	// Metric orders routes to the same destination; 0 keeps the default.
	Metric int `json:"metric,omitempty" yaml:"metric,omitempty"`
}

// Nameservers lists DNS servers and search domains.
type Nameservers struct {
	Addresses []netip.Addr `json:"addresses,omitempty" yaml:"addresses,omitempty"`
	Search    []string     `json:"search,omitempty" yaml:"search,omitempty"`
}

// DefaultRoute returns the default route through gw. It names the
// destination 0.0.0.0/0 (or ::/0) rather than netplan's "default" keyword,
// which older cloud-init releases do not parse.
func DefaultRoute(gw netip.Addr) Route {
	gw = gw.Unmap()
	if gw.Is6() {
		return Route{To: netip.PrefixFrom(netip.IPv6Unspecified(), 0), Via: gw}
	}
	return Route{To: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: gw}
}

// Clone returns a deep copy, or nil for nil.
func (c *NetworkConfig) Clone() *NetworkConfig {
	if c == nil {
		return nil
	}
	out := &NetworkConfig{Ethernets: make(map[string]Ethernet, len(c.Ethernets))}
	for name, e := range c.Ethernets {
		if e.Match != nil {
			m := *e.Match
			e.Match = &m
		}
		if e.AcceptRA != nil {
			v := *e.AcceptRA
			e.AcceptRA = &v
		}
		e.Addresses = slices.Clone(e.Addresses)
		e.Routes = slices.Clone(e.Routes)
		if e.Nameservers != nil {
			e.Nameservers = &Nameservers{
				Addresses: slices.Clone(e.Nameservers.Addresses),
				Search:    slices.Clone(e.Nameservers.Search),
			}
		}
		out.Ethernets[name] = e
	}
	return out
}

// ifaceName is what vmd accepts as a configuration ID or set-name: a Linux
// interface name (at most 15 bytes) that starts with a letter, so that it
// is never read as a number, boolean or null by a YAML parser.
var ifaceName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,14}$`)

// Validate reports every problem in the configuration, each with its path,
// in an error wrapping errdefs.ErrInvalid.
func (c *NetworkConfig) Validate() error {
	var errs field.ErrorList
	root := field.NewPath("network-config")
	if c == nil || len(c.Ethernets) == 0 {
		errs = append(errs, field.Required(root.Child("ethernets"), "at least one ethernet is needed"))
	}
	if c != nil {
		for _, name := range slices.Sorted(maps.Keys(c.Ethernets)) {
			errs = append(errs, validateEthernet(root.Child("ethernets").Key(name), name, c.Ethernets[name])...)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("validating network-config: %w: %w", errs.ToAggregate(), errdefs.ErrInvalid)
}

// validateEthernet checks one interface.
func validateEthernet(p *field.Path, name string, e Ethernet) field.ErrorList {
	var errs field.ErrorList
	if !ifaceName.MatchString(name) {
		errs = append(errs, field.Invalid(p, name, "must be an interface name: a letter, then up to 14 letters, digits, '_', '.' or '-'"))
	}
	if e.Match != nil {
		if hw, err := net.ParseMAC(e.Match.MACAddress); err != nil || len(hw) != 6 {
			errs = append(errs, field.Invalid(p.Child("match", "macaddress"), e.Match.MACAddress, "must be a 48-bit MAC address such as 52:54:00:12:34:56"))
		}
	}
	if e.SetName != "" {
		if e.Match == nil {
			errs = append(errs, field.Required(p.Child("match"), "set-name needs a match"))
		}
		if !ifaceName.MatchString(e.SetName) {
			errs = append(errs, field.Invalid(p.Child("set-name"), e.SetName, "must be an interface name: a letter, then up to 14 letters, digits, '_', '.' or '-'"))
		}
	}
	for i, a := range e.Addresses {
		if !a.IsValid() || a.Addr().IsUnspecified() {
			errs = append(errs, field.Invalid(p.Child("addresses").Index(i), a.String(), "must be an address with a prefix length, as 10.0.0.10/24"))
		}
	}
	for i, r := range e.Routes {
		rp := p.Child("routes").Index(i)
		if !r.To.IsValid() {
			errs = append(errs, field.Required(rp.Child("to"), "a destination network is needed"))
		}
		if !r.Via.IsValid() {
			errs = append(errs, field.Required(rp.Child("via"), "a gateway is needed"))
		} else if r.To.IsValid() && r.To.Addr().Is4() != r.Via.Unmap().Is4() {
			errs = append(errs, field.Invalid(rp.Child("via"), r.Via.String(), "must be of the same address family as to"))
		}
		if r.Metric < 0 {
			errs = append(errs, field.Invalid(rp.Child("metric"), r.Metric, "must not be negative"))
		}
	}
	if ns := e.Nameservers; ns != nil {
		for i, a := range ns.Addresses {
			if !a.IsValid() || a.IsUnspecified() {
				errs = append(errs, field.Invalid(p.Child("nameservers", "addresses").Index(i), a.String(), "must be an IP address"))
			}
		}
		for i, d := range ns.Search {
			for _, msg := range validation.IsDNS1123Subdomain(d) {
				errs = append(errs, field.Invalid(p.Child("nameservers", "search").Index(i), d, msg))
			}
		}
	}
	if e.MTU != 0 && (e.MTU < 68 || e.MTU > 65535) {
		errs = append(errs, field.Invalid(p.Child("mtu"), e.MTU, "must be between 68 and 65535"))
	}
	return errs
}

// networkDocument is the file's top level: version first, as people write
// it and as cloud-init's examples show.
type networkDocument struct {
	Version   int                 `yaml:"version"`
	Ethernets map[string]Ethernet `yaml:"ethernets"`
}

// render writes the YAML without validating. MAC addresses are written in
// canonical lowercase form, every string value is double-quoted (see
// NetworkConfig), and map keys come out sorted, so equal configurations
// render to equal bytes.
func (c *NetworkConfig) render() ([]byte, error) {
	doc := networkDocument{Version: 2, Ethernets: c.Clone().Ethernets}
	for name, e := range doc.Ethernets {
		if e.Match != nil {
			if hw, err := net.ParseMAC(e.Match.MACAddress); err == nil {
				e.Match.MACAddress = hw.String()
			}
		}
		doc.Ethernets[name] = e
	}
	var n yaml.Node
	if err := n.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding network-config: %w", err)
	}
	quoteStringValues(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("encoding network-config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding network-config: %w", err)
	}
	return buf.Bytes(), nil
}

// quoteStringValues marks every string scalar that is a value (not a
// mapping key) double-quoted. Keys are field names or validated interface
// names and stay plain.
func quoteStringValues(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			quoteStringValues(c)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			quoteStringValues(n.Content[i])
		}
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
}
