package network

// Design of vmd's nftables ruleset (what Plan produces and why).
//
// Ownership and atomicity. vmd owns exactly two tables, `table bridge vmd`
// and `table ip vmd`, and nothing else. The nft adapter replaces both in one
// netlink transaction (add-if-missing, delete, re-add), so the kernel goes
// from the old ruleset to the new one with no intermediate state: switching
// a VM PortList -> WholeIP -> PortList never opens it wide, a restart never
// duplicates rules, and other tables (firewalld, docker, the operator's own)
// are never read or written. Because the whole content is re-planned from
// state, per-VM facts live in sets and maps (one element per VM) and the
// rule list is the same for one VM or a thousand.
//
// Coexistence. A packet must be accepted by every base chain on a hook, in
// every table, so vmd's base chains use policy accept and drop only traffic
// that provably concerns vmd: packets entering from a tenant tap or bridge,
// or leaving into a tenant bridge. Default-restrictive is achieved inside
// the regular chains those packets jump to, which end in an explicit drop.
//
// Families. The tenant networks and the external pool are IPv4, so NAT and
// filtering use the `ip` family, as cozy-proxy does: rules need no `meta
// nfproto` guards, and addresses are 4 bytes wherever they are loaded. IPv6
// cannot sneak past: the bridge table drops every frame from
// a guest that is not IPv4 or ARP, and tenant bridges get no IPv6 routes.
// Anti-spoofing uses the `bridge` family because guest-to-guest traffic on
// one bridge is switched, not routed: the ip family never sees it unless
// br_netfilter is loaded, and ARP is only visible at L2.
//
// table bridge vmd
//
//   - chain prerouting (filter hook prerouting, priority filter = -200):
//     `iifname @taps jump from_guest`. Prerouting sees every frame a guest
//     sends, whether it is then bridged to a sibling or delivered up to
//     the host for routing.
//   - chain from_guest: the tap is pinned to the guest's MAC (set tap_mac,
//     key ifname . ether_addr) for the Ethernet source and the ARP sender
//     hardware address, and to its IP (set tap_ip) for the ARP sender
//     protocol address and the IPv4 source. The only exception is DHCP
//     from an unconfigured guest (0.0.0.0:68 -> 255.255.255.255:67).
//     Frames with UDP source port 67 are dropped so a guest cannot act as
//     a rogue DHCP server for its neighbours. Everything that is not IPv4
//     or ARP (IPv6, VLAN tags, other ethertypes) ends in the final drop.
//
// table ip vmd
//
//   - chain prerouting (nat hook prerouting, priority dstnat): `dnat to ip
//     daddr map @ext_dnat` rewrites an external IP to its VM's private IP,
//     1:1 for every protocol and port (cozy-proxy's ingress_dnat). Using a
//     conntrack NAT statement instead of cozy-proxy's stateless payload
//     rewrite lets conntrack undo the translation on replies and marks the
//     flow `ct status dnat`, which to_tenant relies on.
//   - chain postrouting (nat hook postrouting, priority srcnat): towards the
//     uplink, `snat to ip saddr map @ext_snat` gives an exposed VM its
//     external IP as source in both methods (cozy-proxy's egress_snat);
//     every other tenant address is masqueraded behind the uplink. A map
//     miss makes the snat rule not match, so the masquerade rule after it
//     catches VMs without an external IP.
//   - chain forward (filter hook forward, priority filter): `ct state
//     established,related accept` first, so replies to any accepted flow
//     (including a PortList VM's own egress, whose replies arrive on
//     ephemeral ports) pass and every later rule judges only new flows.
//     Then `iifname @bridges jump from_tenant` and `oifname @bridges jump
//     to_tenant`; traffic not touching a tenant bridge is not vmd's to
//     judge.
//   - chain from_tenant: new flows leaving a tenant may go out of the uplink
//     only. Forwarding into another tenant's bridge, or to any other host
//     interface, is dropped: this is tenant isolation. Within one tenant,
//     guests talk at L2 and never reach this chain; the per-tenant `iifname
//     X oifname X accept` rules keep that working on hosts where
//     br_netfilter pushes bridged frames through the ip hooks.
//   - chain to_tenant: new flows entering a tenant from outside. Every
//     accept requires `ct status dnat`, i.e. the flow came in through an
//     external IP: a packet routed straight to a private address (the lab
//     client has such a route) was not translated and is dropped, so
//     private addresses are never exposed, whatever the method. The filter
//     then runs on the post-DNAT destination, the VM's private IP, like
//     cozy-proxy's port_filter (sets exposed_*, keyed by private IP; the
//     mapping is 1:1 so this is the same as keying by external IP).
//     WholeIP: `ip daddr @exposed_wholeip accept`. PortList: `meta l4proto
//     tcp ip daddr . tcp dport @exposed_tcp accept` (TCP only, like
//     cozy-proxy, whose Services carry TCP ports) and `meta l4proto icmp ip
//     daddr @exposed_icmp accept` when AllowICMP. Then drop.
//     Matching `ct original ip daddr` (the external IP) instead was
//     considered and rejected for tooling reasons: google/nftables v0.3.0
//     cannot decode the u8 ct direction attribute the kernel echoes (so
//     Dump could not read the rule back), and nft 1.0.6 aborts listing a
//     concatenation that starts with the family-generic ct address key.
//   - chain input (filter hook input, priority filter): `iifname @bridges
//     jump guest_to_host`; guest_to_host accepts established/related, DHCP
//     (udp 68 -> 67, any destination: requests are broadcast until the
//     guest has a lease) and DNS (udp and tcp 53) to its own tenant's
//     gateway (set gateways, key ifname . ipv4_addr), and drops the rest.
//     The host's other addresses, including the uplink's and other
//     tenants' gateways, are out of a guest's reach.
//
// Known limits, by design: the host itself reaches guests by their private
// IPs (output is not filtered; the host is trusted) and not through their
// external IPs (no output DNAT); a guest cannot reach another VM's external
// IP (hairpin NAT), since the translated flow would cross tenant bridges.

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// TableName is the name of both vmd-owned tables (bridge and ip family).
const TableName = "vmd"

// Names of vmd's sets, maps and chains. They appear in `nft list ruleset`
// output, so they are part of vmd's operator-facing surface.
const (
	SetTaps           = "taps"
	SetTapMAC         = "tap_mac"
	SetTapIP          = "tap_ip"
	SetBridges        = "bridges"
	SetGateways       = "gateways"
	MapExtDNAT        = "ext_dnat"
	MapExtSNAT        = "ext_snat"
	SetExposedWholeIP = "exposed_wholeip"
	SetExposedTCP     = "exposed_tcp"
	SetExposedICMP    = "exposed_icmp"

	ChainPrerouting  = "prerouting"
	ChainPostrouting = "postrouting"
	ChainForward     = "forward"
	ChainInput       = "input"
	ChainFromGuest   = "from_guest"
	ChainFromTenant  = "from_tenant"
	ChainToTenant    = "to_tenant"
	ChainGuestToHost = "guest_to_host"
)

// Well-known ports.
const (
	portDHCPServer = 67
	portDHCPClient = 68
	portDNS        = 53
)

// Plan computes the complete content of vmd's nftables tables for d. It is
// pure and deterministic: the same Desired, in any order, yields the same
// Ruleset (normalized; String is byte-identical). Invalid input yields an
// error matching errdefs.ErrInvalid that lists every problem with a field
// path naming the tenant or endpoint, and no ruleset.
func Plan(d Desired) (Ruleset, error) {
	if err := validate(d); err != nil {
		return Ruleset{}, err
	}
	tenants := slices.Clone(d.Tenants)
	slices.SortFunc(tenants, func(a, b Tenant) int { return cmp.Compare(a.Namespace, b.Namespace) })
	eps := slices.Clone(d.Endpoints)
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	rs := Ruleset{Tables: []Table{planBridge(eps), planIP(d.Host, tenants, eps)}}
	rs.Normalize()
	if err := rs.Validate(); err != nil {
		// A planner bug, not bad input: never hand the adapter a broken plan.
		return Ruleset{}, fmt.Errorf("planning ruleset: internal error: %w", err)
	}
	return rs, nil
}

// Small constructors keep the rule tables below readable.

func eq(f Field, v Value) Match        { return Match{Fields: []Field{f}, Op: OpEq, Value: v} }
func in(set string, fs ...Field) Match { return Match{Fields: fs, Op: OpEq, Set: set} }
func notIn(set string, fs ...Field) Match {
	return Match{Fields: fs, Op: OpNeq, Set: set}
}
func rule(a Action, comment string, ms ...Match) Rule {
	return Rule{Matches: ms, Action: a, Comment: comment}
}

var (
	accept = Action{Kind: ActionAccept}
	drop   = Action{Kind: ActionDrop}
)

func jump(chain string) Action { return Action{Kind: ActionJump, Chain: chain} }

func planBridge(eps []Endpoint) Table {
	taps := Set{Name: SetTaps, Key: []DataType{TypeIfname}}
	tapMAC := Set{Name: SetTapMAC, Key: []DataType{TypeIfname, TypeEtherAddr}}
	tapIP := Set{Name: SetTapIP, Key: []DataType{TypeIfname, TypeIPv4Addr}}
	for _, e := range eps {
		tap := IfNameValue(e.Tap)
		taps.Elements = append(taps.Elements, Element{Key: []Value{tap}})
		tapMAC.Elements = append(tapMAC.Elements, Element{Key: []Value{tap, MACValue(e.MAC)}})
		tapIP.Elements = append(tapIP.Elements, Element{Key: []Value{tap, AddrValue(e.IP)}})
	}
	isARP := eq(FieldEtherType, EtherTypeValue(EtherTypeARP))
	isIP := eq(FieldEtherType, EtherTypeValue(EtherTypeIPv4))
	isUDP := eq(FieldIPProtocol, ProtoValue(ProtoUDP))
	fromGuest := []Rule{
		rule(drop, "spoofed ethernet source", notIn(SetTapMAC, FieldIIFName, FieldEtherSaddr)),
		rule(drop, "spoofed arp sender mac", isARP, notIn(SetTapMAC, FieldIIFName, FieldARPSaddrEther)),
		rule(drop, "spoofed arp sender ip", isARP, notIn(SetTapIP, FieldIIFName, FieldARPSaddrIP)),
		rule(accept, "", isARP),
		rule(accept, "dhcp from an unconfigured guest", isIP,
			eq(FieldIPSaddr, AddrValue(netip.IPv4Unspecified())),
			eq(FieldIPDaddr, AddrValue(netip.AddrFrom4([4]byte{255, 255, 255, 255}))),
			isUDP, eq(FieldUDPSport, PortValue(portDHCPClient)), eq(FieldUDPDport, PortValue(portDHCPServer))),
		rule(drop, "rogue dhcp server", isIP, isUDP, eq(FieldUDPSport, PortValue(portDHCPServer))),
		rule(drop, "spoofed ip source", isIP, notIn(SetTapIP, FieldIIFName, FieldIPSaddr)),
		rule(accept, "", isIP),
		rule(drop, "only ipv4 and arp from guests"),
	}
	return Table{
		Family: FamilyBridge,
		Name:   TableName,
		Sets:   []Set{taps, tapMAC, tapIP},
		Chains: []Chain{
			{
				Name:  ChainPrerouting,
				Base:  &BaseChain{Type: ChainTypeFilter, Hook: HookPrerouting, Priority: PriorityBridgeFilter, Policy: PolicyAccept},
				Rules: []Rule{rule(jump(ChainFromGuest), "", in(SetTaps, FieldIIFName))},
			},
			{Name: ChainFromGuest, Rules: fromGuest},
		},
	}
}

func planIP(h HostConfig, tenants []Tenant, eps []Endpoint) Table {
	bridges := Set{Name: SetBridges, Key: []DataType{TypeIfname}}
	gateways := Set{Name: SetGateways, Key: []DataType{TypeIfname, TypeIPv4Addr}}
	for _, t := range tenants {
		br := IfNameValue(t.Bridge)
		bridges.Elements = append(bridges.Elements, Element{Key: []Value{br}})
		gateways.Elements = append(gateways.Elements, Element{Key: []Value{br, AddrValue(t.Gateway)}})
	}
	dnat := Set{Name: MapExtDNAT, Key: []DataType{TypeIPv4Addr}, Data: TypeIPv4Addr}
	snat := Set{Name: MapExtSNAT, Key: []DataType{TypeIPv4Addr}, Data: TypeIPv4Addr}
	// The exposure sets are keyed by the VM's private IP: to_tenant runs
	// after DNAT (see the design notes above).
	whole := Set{Name: SetExposedWholeIP, Key: []DataType{TypeIPv4Addr}}
	tcp := Set{Name: SetExposedTCP, Key: []DataType{TypeIPv4Addr, TypeInetService}}
	icmp := Set{Name: SetExposedICMP, Key: []DataType{TypeIPv4Addr}}
	for _, e := range eps {
		x := e.External
		if x == nil {
			continue
		}
		ext, priv := AddrValue(x.IP), AddrValue(e.IP)
		dnat.Elements = append(dnat.Elements, Element{Key: []Value{ext}, Data: priv})
		snat.Elements = append(snat.Elements, Element{Key: []Value{priv}, Data: ext})
		switch x.Method {
		case v1alpha1.ExternalMethodWholeIP:
			whole.Elements = append(whole.Elements, Element{Key: []Value{priv}})
		case v1alpha1.ExternalMethodPortList:
			for _, p := range uniquePorts(x.Ports) {
				tcp.Elements = append(tcp.Elements, Element{Key: []Value{priv, PortValue(p)}})
			}
			if x.AllowICMP {
				icmp.Elements = append(icmp.Elements, Element{Key: []Value{priv}})
			}
		}
	}

	uplink := IfNameValue(h.Uplink)
	established := eq(FieldCtState, CtStateValue(CtStateEstablished|CtStateRelated))
	viaExternal := eq(FieldCtStatus, CtStatusValue(CtStatusDNAT))
	fromTenant := []Rule{rule(drop, "", eq(FieldCtState, CtStateValue(CtStateInvalid)))}
	for _, t := range tenants {
		br := IfNameValue(t.Bridge)
		fromTenant = append(fromTenant, rule(accept, "same tenant (br_netfilter)", eq(FieldIIFName, br), eq(FieldOIFName, br)))
	}
	fromTenant = append(fromTenant,
		rule(accept, "egress to the uplink", eq(FieldOIFName, uplink)),
		rule(drop, "other tenants and host networks"),
	)
	return Table{
		Family: FamilyIP,
		Name:   TableName,
		Sets:   []Set{bridges, gateways, dnat, snat, whole, tcp, icmp},
		Chains: []Chain{
			{
				Name: ChainPrerouting,
				Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPrerouting, Priority: PriorityIPDstNAT, Policy: PolicyAccept},
				Rules: []Rule{
					rule(Action{Kind: ActionDNATMap, MapKey: FieldIPDaddr, Map: MapExtDNAT}, "external ip to vm"),
				},
			},
			{
				Name: ChainPostrouting,
				Base: &BaseChain{Type: ChainTypeNAT, Hook: HookPostrouting, Priority: PriorityIPSrcNAT, Policy: PolicyAccept},
				Rules: []Rule{
					rule(Action{Kind: ActionSNATMap, MapKey: FieldIPSaddr, Map: MapExtSNAT}, "vm egress from its external ip",
						eq(FieldOIFName, uplink)),
					rule(Action{Kind: ActionMasquerade}, "vm egress without external ip",
						eq(FieldOIFName, uplink), eq(FieldIPSaddr, PrefixValue(h.TenantPool))),
				},
			},
			{
				Name: ChainForward,
				Base: &BaseChain{Type: ChainTypeFilter, Hook: HookForward, Priority: PriorityIPFilter, Policy: PolicyAccept},
				Rules: []Rule{
					rule(accept, "", established),
					rule(jump(ChainFromTenant), "", in(SetBridges, FieldIIFName)),
					rule(jump(ChainToTenant), "", in(SetBridges, FieldOIFName)),
				},
			},
			{Name: ChainFromTenant, Rules: fromTenant},
			{
				Name: ChainToTenant,
				Rules: []Rule{
					rule(accept, "wholeip", viaExternal, in(SetExposedWholeIP, FieldIPDaddr)),
					rule(accept, "portlist tcp", viaExternal, eq(FieldL4Proto, ProtoValue(ProtoTCP)), in(SetExposedTCP, FieldIPDaddr, FieldTCPDport)),
					rule(accept, "portlist icmp", viaExternal, eq(FieldL4Proto, ProtoValue(ProtoICMP)), in(SetExposedICMP, FieldIPDaddr)),
					rule(drop, "not exposed"),
				},
			},
			{
				Name: ChainInput,
				Base: &BaseChain{Type: ChainTypeFilter, Hook: HookInput, Priority: PriorityIPFilter, Policy: PolicyAccept},
				Rules: []Rule{
					rule(jump(ChainGuestToHost), "", in(SetBridges, FieldIIFName)),
				},
			},
			{
				Name: ChainGuestToHost,
				Rules: []Rule{
					rule(accept, "", established),
					rule(accept, "dhcp", eq(FieldL4Proto, ProtoValue(ProtoUDP)),
						eq(FieldUDPSport, PortValue(portDHCPClient)), eq(FieldUDPDport, PortValue(portDHCPServer))),
					rule(accept, "dns to the gateway", eq(FieldL4Proto, ProtoValue(ProtoUDP)),
						in(SetGateways, FieldIIFName, FieldIPDaddr), eq(FieldUDPDport, PortValue(portDNS))),
					rule(accept, "dns to the gateway", eq(FieldL4Proto, ProtoValue(ProtoTCP)),
						in(SetGateways, FieldIIFName, FieldIPDaddr), eq(FieldTCPDport, PortValue(portDNS))),
					rule(drop, "guests reach the host for dhcp and dns only"),
				},
			},
		},
	}
}

// uniquePorts returns ports sorted and deduplicated (validate has already
// checked the range); a port listed twice is one set element.
func uniquePorts(ports []int) []uint16 {
	out := make([]uint16, 0, len(ports))
	for _, p := range ports {
		out = append(out, uint16(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// validate returns every problem with d as one errdefs.InvalidError.
func validate(d Desired) error {
	var errs field.ErrorList
	h := d.Host
	hp := field.NewPath("host")
	if err := checkIfName(h.Uplink); err != nil {
		errs = append(errs, field.Invalid(hp.Child("uplink"), h.Uplink, err.Error()))
	}
	poolOK := h.TenantPool.IsValid() && h.TenantPool.Addr().Is4() && h.TenantPool.Masked() == h.TenantPool
	if !poolOK {
		errs = append(errs, field.Invalid(hp.Child("tenantPool"), h.TenantPool.String(), "must be an IPv4 prefix with no host bits set"))
	}
	if err := h.ExternalPool.Validate(); err != nil {
		errs = append(errs, field.Invalid(hp.Child("externalPool"), h.ExternalPool.String(), err.Error()))
	} else if poolOK && h.ExternalPool.First.Compare(lastAddr(h.TenantPool)) <= 0 && h.TenantPool.Masked().Addr().Compare(h.ExternalPool.Last) <= 0 {
		errs = append(errs, field.Invalid(hp.Child("externalPool"), h.ExternalPool.String(), "overlaps the tenant pool"))
	}

	ifnames := map[string]string{} // interface name -> owner path, across kinds
	claimIf := func(p *field.Path, name string) {
		if err := checkIfName(name); err != nil {
			errs = append(errs, field.Invalid(p, name, err.Error()))
			return
		}
		if owner, dup := ifnames[name]; dup {
			errs = append(errs, field.Duplicate(p, name+" (also "+owner+")"))
			return
		}
		ifnames[name] = p.String()
	}
	if h.Uplink != "" {
		ifnames[h.Uplink] = hp.Child("uplink").String()
	}

	tenants := map[string]Tenant{}
	tp := field.NewPath("tenants")
	for i, t := range d.Tenants {
		p := tp.Key(t.Namespace)
		if t.Namespace == "" {
			p = tp.Index(i)
			errs = append(errs, field.Required(p.Child("namespace"), "a tenant needs a namespace"))
		} else if _, dup := tenants[t.Namespace]; dup {
			errs = append(errs, field.Duplicate(p, t.Namespace))
			continue
		}
		claimIf(p.Child("bridge"), t.Bridge)
		switch {
		case !t.Subnet.IsValid() || !t.Subnet.Addr().Is4() || t.Subnet.Masked() != t.Subnet || t.Subnet.Bits() > MaxSubnetBits:
			errs = append(errs, field.Invalid(p.Child("subnet"), t.Subnet.String(), fmt.Sprintf("must be an IPv4 prefix of at most /%d with no host bits set", MaxSubnetBits)))
		case poolOK && (!h.TenantPool.Contains(t.Subnet.Addr()) || t.Subnet.Bits() < h.TenantPool.Bits()):
			errs = append(errs, field.Invalid(p.Child("subnet"), t.Subnet.String(), "must lie inside the tenant pool "+h.TenantPool.String()))
		default:
			for _, o := range tenants {
				if o.Subnet.IsValid() && o.Subnet.Overlaps(t.Subnet) {
					errs = append(errs, field.Invalid(p.Child("subnet"), t.Subnet.String(), "overlaps the subnet of tenant "+o.Namespace))
				}
			}
			if !t.Subnet.Contains(t.Gateway) || t.Gateway == t.Subnet.Addr() || t.Gateway == lastAddr(t.Subnet) {
				errs = append(errs, field.Invalid(p.Child("gateway"), t.Gateway.String(), "must be a host address of the subnet"))
			}
		}
		if t.Namespace != "" {
			tenants[t.Namespace] = t
		}
	}

	ep := field.NewPath("endpoints")
	keys := map[string]bool{}
	macs := map[string]string{}
	ips := map[netip.Addr]string{}
	exts := map[netip.Addr]string{}
	for i, e := range d.Endpoints {
		p := ep.Key(e.Key())
		if e.Namespace == "" || e.Name == "" {
			p = ep.Index(i)
			errs = append(errs, field.Required(p, "an endpoint needs a namespace and a name"))
		} else if keys[e.Key()] {
			errs = append(errs, field.Duplicate(p, e.Key()))
			continue
		}
		keys[e.Key()] = true
		t, ok := tenants[e.Namespace]
		if !ok && e.Namespace != "" {
			errs = append(errs, field.NotFound(p.Child("namespace"), e.Namespace))
		}
		claimIf(p.Child("tap"), e.Tap)
		switch {
		case len(e.MAC) != 6:
			errs = append(errs, field.Invalid(p.Child("mac"), e.MAC.String(), "must be a 48-bit MAC"))
		case e.MAC[0]&1 != 0:
			errs = append(errs, field.Invalid(p.Child("mac"), e.MAC.String(), "must be unicast"))
		case macs[e.MAC.String()] != "":
			errs = append(errs, field.Duplicate(p.Child("mac"), e.MAC.String()+" (also "+macs[e.MAC.String()]+")"))
		default:
			macs[e.MAC.String()] = e.Key()
		}
		switch {
		case !e.IP.Is4():
			errs = append(errs, field.Invalid(p.Child("ip"), e.IP.String(), "must be an IPv4 address"))
		case ok && t.Subnet.IsValid() && IsReservedInSubnet(t.Subnet, e.IP):
			errs = append(errs, field.Invalid(p.Child("ip"), e.IP.String(), "must be a guest address of tenant subnet "+t.Subnet.String()+" (not network, gateway or broadcast)"))
		case ips[e.IP] != "":
			errs = append(errs, field.Duplicate(p.Child("ip"), e.IP.String()+" (also "+ips[e.IP]+")"))
		default:
			ips[e.IP] = e.Key()
		}
		if x := e.External; x != nil {
			xp := p.Child("external")
			switch {
			case !h.ExternalPool.Contains(x.IP):
				errs = append(errs, field.Invalid(xp.Child("ip"), x.IP.String(), "must lie in the external pool "+h.ExternalPool.String()))
			case exts[x.IP] != "":
				errs = append(errs, field.Duplicate(xp.Child("ip"), x.IP.String()+" (also "+exts[x.IP]+")"))
			default:
				exts[x.IP] = e.Key()
			}
			switch x.Method {
			case v1alpha1.ExternalMethodWholeIP:
			case v1alpha1.ExternalMethodPortList:
				for j, port := range x.Ports {
					if port < 1 || port > 65535 {
						errs = append(errs, field.Invalid(xp.Child("ports").Index(j), port, "must be between 1 and 65535"))
					}
				}
			default:
				errs = append(errs, field.NotSupported(xp.Child("method"), x.Method, v1alpha1.ExternalMethods))
			}
		}
	}
	return errdefs.NewInvalid("network plan", "desired", errs)
}
