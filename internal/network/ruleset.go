package network

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Ruleset is the complete nftables content vmd owns on a host, as plain
// data. It is what Plan produces and what the nft adapter writes in one
// netlink transaction and reads back (Dump), so "is the kernel in the state
// we want" is a string comparison of two renderings. The model covers only
// the vocabulary vmd's planner uses; the adapter rejects anything else
// rather than guessing.
type Ruleset struct {
	Tables []Table
}

// Family is an nftables address family. vmd uses "ip" for routing, NAT and
// filtering of its IPv4 tenant networks and "bridge" for L2 anti-spoofing on
// bridge ports (see planner.go).
type Family string

// Families used by vmd.
const (
	FamilyIP     Family = "ip"
	FamilyBridge Family = "bridge"
)

// Table is one nftables table. vmd replaces its tables as a whole, so a
// table is also the unit of ownership: vmd never touches a table it did not
// name.
type Table struct {
	Family Family
	Name   string
	Sets   []Set
	Chains []Chain
}

// DataType is an nftables data type of a set key, a map value or a match
// operand, spelled as nft spells it.
type DataType string

// Data types used by vmd.
const (
	TypeIfname      DataType = "ifname"
	TypeIPv4Addr    DataType = "ipv4_addr"
	TypeEtherAddr   DataType = "ether_addr"
	TypeEtherType   DataType = "ether_type"
	TypeInetProto   DataType = "inet_proto"
	TypeInetService DataType = "inet_service"
	TypeCtState     DataType = "ct_state"
	TypeCtStatus    DataType = "ct_status"
)

// Len is the size of a value of this type in the kernel's representation
// (an interface name is a NUL-padded IFNAMSIZ buffer).
func (t DataType) Len() int {
	switch t {
	case TypeIfname:
		return 16
	case TypeIPv4Addr, TypeCtState, TypeCtStatus:
		return 4
	case TypeEtherAddr:
		return 6
	case TypeEtherType, TypeInetService:
		return 2
	case TypeInetProto:
		return 1
	}
	return 0
}

// Set is a named set, or a map when Data is not empty. Per-VM facts (MACs,
// addresses, exposed ports) live in sets and maps rather than in rules, so
// the rule list does not depend on how many VMs exist and a change to one
// VM is an element change.
type Set struct {
	Name string
	// Key has one type, or several for a concatenation ("ifname . ipv4_addr").
	Key []DataType
	// Data is the value type of a map; empty for a plain set.
	Data     DataType
	Elements []Element
}

// IsMap reports whether the set maps keys to values.
func (s Set) IsMap() bool { return s.Data != "" }

// Element is one set member: a key (one value per key type) and, in a map,
// the value it maps to.
type Element struct {
	Key  []Value
	Data Value
}

// ChainType is the type of a base chain.
type ChainType string

// Chain types used by vmd.
const (
	ChainTypeFilter ChainType = "filter"
	ChainTypeNAT    ChainType = "nat"
)

// Hook is the netfilter hook a base chain is attached to.
type Hook string

// Hooks used by vmd.
const (
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookOutput      Hook = "output"
	HookPostrouting Hook = "postrouting"
)

// Policy is a base chain's verdict for packets no rule decided.
type Policy string

// Chain policies.
const (
	PolicyAccept Policy = "accept"
	PolicyDrop   Policy = "drop"
)

// Standard chain priorities (nft's named priorities).
const (
	PriorityIPDstNAT     = -100
	PriorityIPFilter     = 0
	PriorityIPSrcNAT     = 100
	PriorityBridgeFilter = -200
)

// BaseChain attaches a chain to a hook. A regular chain (only reached by
// jump) has none.
type BaseChain struct {
	Type     ChainType
	Hook     Hook
	Priority int
	Policy   Policy
}

// Chain is a named list of rules.
type Chain struct {
	Name  string
	Base  *BaseChain
	Rules []Rule
}

// Rule is a conjunction of matches followed by one action. Comment is
// rendered last, as nft requires.
type Rule struct {
	Matches []Match
	Action  Action
	Comment string
}

// Field is a packet, metadata or conntrack selector. Each field has a fixed
// data type; the adapter knows how each one is loaded in the kernel.
type Field string

// Fields used by vmd. They are spelled as in nft. Protocol header fields do
// not imply their protocol: a rule must match the protocol first (the
// planner always does), exactly as the kernel will evaluate it.
const (
	FieldIIFName       Field = "iifname"
	FieldOIFName       Field = "oifname"
	FieldL4Proto       Field = "meta l4proto"
	FieldEtherSaddr    Field = "ether saddr"
	FieldEtherType     Field = "ether type"
	FieldIPProtocol    Field = "ip protocol"
	FieldIPSaddr       Field = "ip saddr"
	FieldIPDaddr       Field = "ip daddr"
	FieldARPSaddrEther Field = "arp saddr ether"
	FieldARPSaddrIP    Field = "arp saddr ip"
	FieldUDPSport      Field = "udp sport"
	FieldUDPDport      Field = "udp dport"
	FieldTCPDport      Field = "tcp dport"
	FieldCtState       Field = "ct state"
	FieldCtStatus      Field = "ct status"
)

var fieldTypes = map[Field]DataType{
	FieldIIFName:       TypeIfname,
	FieldOIFName:       TypeIfname,
	FieldL4Proto:       TypeInetProto,
	FieldEtherSaddr:    TypeEtherAddr,
	FieldEtherType:     TypeEtherType,
	FieldIPProtocol:    TypeInetProto,
	FieldIPSaddr:       TypeIPv4Addr,
	FieldIPDaddr:       TypeIPv4Addr,
	FieldARPSaddrEther: TypeEtherAddr,
	FieldARPSaddrIP:    TypeIPv4Addr,
	FieldUDPSport:      TypeInetService,
	FieldUDPDport:      TypeInetService,
	FieldTCPDport:      TypeInetService,
	FieldCtState:       TypeCtState,
	FieldCtStatus:      TypeCtStatus,
}

// Type is the data type the field yields; "" for an unknown field.
func (f Field) Type() DataType { return fieldTypes[f] }

// Op is a match operator.
type Op string

// Match operators. For ct state and ct status, OpEq means "any of these bits".
const (
	OpEq  Op = "=="
	OpNeq Op = "!="
)

// Match compares one field with a value, or a concatenation of fields with
// a named set (membership, or non-membership with OpNeq).
type Match struct {
	Fields []Field
	Op     Op
	// Value is the operand when Set is empty.
	Value Value
	// Set names the set looked up; the Fields' types must equal its key.
	Set string
}

// ActionKind says what a rule does with a matching packet.
type ActionKind string

// Actions used by vmd.
const (
	ActionAccept     ActionKind = "accept"
	ActionDrop       ActionKind = "drop"
	ActionJump       ActionKind = "jump"
	ActionSNATMap    ActionKind = "snat"
	ActionDNATMap    ActionKind = "dnat"
	ActionMasquerade ActionKind = "masquerade"
)

// Action is a rule's statement. SNAT/DNAT translate to the address the map
// yields for the packet's field (MapKey), e.g. "dnat to ip daddr map @m".
type Action struct {
	Kind   ActionKind
	Chain  string
	MapKey Field
	Map    string
}

// Value is a typed constant: an interface name, an IPv4 address or prefix,
// a MAC, a port, a protocol number, an ethertype or a ct state mask. Only
// the member matching Type is meaningful.
type Value struct {
	Type   DataType
	Name   string
	Addr   netip.Addr
	Prefix netip.Prefix
	MAC    net.HardwareAddr
	Num    uint32
}

// IfNameValue is an interface name operand.
func IfNameValue(name string) Value { return Value{Type: TypeIfname, Name: name} }

// AddrValue is an IPv4 address operand.
func AddrValue(a netip.Addr) Value { return Value{Type: TypeIPv4Addr, Addr: a} }

// PrefixValue is an IPv4 prefix operand ("address within").
func PrefixValue(p netip.Prefix) Value { return Value{Type: TypeIPv4Addr, Prefix: p.Masked()} }

// MACValue is an Ethernet address operand.
func MACValue(m net.HardwareAddr) Value {
	return Value{Type: TypeEtherAddr, MAC: slices.Clone(m)}
}

// PortValue is a TCP/UDP port operand.
func PortValue(p uint16) Value { return Value{Type: TypeInetService, Num: uint32(p)} }

// ProtoValue is an IP protocol number operand.
func ProtoValue(p uint8) Value { return Value{Type: TypeInetProto, Num: uint32(p)} }

// EtherTypeValue is an ethertype operand.
func EtherTypeValue(t uint16) Value { return Value{Type: TypeEtherType, Num: uint32(t)} }

// CtStateValue is a conntrack state mask operand (CtState* bits).
func CtStateValue(mask uint32) Value { return Value{Type: TypeCtState, Num: mask} }

// CtStatusValue is a conntrack status mask operand (CtStatus* bits).
func CtStatusValue(mask uint32) Value { return Value{Type: TypeCtStatus, Num: mask} }

// IP protocol numbers and ethertypes vmd matches.
const (
	ProtoICMP      = 1
	ProtoTCP       = 6
	ProtoUDP       = 17
	EtherTypeIPv4  = 0x0800
	EtherTypeARP   = 0x0806
	EtherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	maxIfNameBytes = 15
)

// Conntrack state bits, as the kernel defines them.
const (
	CtStateInvalid     uint32 = 1
	CtStateEstablished uint32 = 2
	CtStateRelated     uint32 = 4
	CtStateNew         uint32 = 8
	CtStateUntracked   uint32 = 64
)

// Conntrack status bits (IPS_*), as the kernel defines them.
const (
	CtStatusSNAT uint32 = 0x10
	CtStatusDNAT uint32 = 0x20
)

var (
	protoNames     = map[uint32]string{ProtoICMP: "icmp", ProtoTCP: "tcp", ProtoUDP: "udp"}
	etherTypeNames = map[uint32]string{EtherTypeIPv4: "ip", EtherTypeARP: "arp", EtherTypeIPv6: "ip6", etherTypeVLAN: "8021q"}
	ctStateNames   = []struct {
		bit  uint32
		name string
	}{{CtStateInvalid, "invalid"}, {CtStateEstablished, "established"}, {CtStateRelated, "related"}, {CtStateNew, "new"}, {CtStateUntracked, "untracked"}}
	ctStatusNames = []struct {
		bit  uint32
		name string
	}{{CtStatusSNAT, "snat"}, {CtStatusDNAT, "dnat"}}
)

// IsPrefix reports whether the value is a prefix rather than one address.
func (v Value) IsPrefix() bool { return v.Type == TypeIPv4Addr && v.Prefix.IsValid() }

// String renders the value as nft prints it.
func (v Value) String() string {
	switch v.Type {
	case TypeIfname:
		return strconv.Quote(v.Name)
	case TypeIPv4Addr:
		if v.Prefix.IsValid() {
			return v.Prefix.String()
		}
		return v.Addr.String()
	case TypeEtherAddr:
		return v.MAC.String()
	case TypeInetService:
		return strconv.FormatUint(uint64(v.Num), 10)
	case TypeInetProto:
		if n, ok := protoNames[v.Num]; ok {
			return n
		}
		return strconv.FormatUint(uint64(v.Num), 10)
	case TypeEtherType:
		if n, ok := etherTypeNames[v.Num]; ok {
			return n
		}
		return fmt.Sprintf("0x%04x", v.Num)
	case TypeCtState, TypeCtStatus:
		table := ctStateNames
		if v.Type == TypeCtStatus {
			table = ctStatusNames
		}
		var names []string
		rest := v.Num
		for _, s := range table {
			if rest&s.bit != 0 {
				names = append(names, s.name)
				rest &^= s.bit
			}
		}
		if rest != 0 {
			names = append(names, fmt.Sprintf("0x%x", rest))
		}
		return strings.Join(names, ",")
	}
	return fmt.Sprintf("<invalid %q>", v.Type)
}

// compareValues orders values of one type naturally (addresses numerically,
// names lexically), which makes element order independent of the order
// the kernel or the caller produced them in.
func compareValues(a, b Value) int {
	if c := cmp.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	switch a.Type {
	case TypeIfname:
		return cmp.Compare(a.Name, b.Name)
	case TypeIPv4Addr:
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	case TypeEtherAddr:
		return bytes.Compare(a.MAC, b.MAC)
	}
	return cmp.Compare(a.Num, b.Num)
}

func compareElements(a, b Element) int {
	for i := range min(len(a.Key), len(b.Key)) {
		if c := compareValues(a.Key[i], b.Key[i]); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(len(a.Key), len(b.Key)); c != 0 {
		return c
	}
	return compareValues(a.Data, b.Data)
}

// Normalize sorts tables, sets, set elements and chains into the canonical
// order String renders, leaving rule order (which is semantic) alone. Plan
// returns normalized rulesets; the adapter normalizes what it reads back
// because the kernel lists set elements in hash order.
func (rs *Ruleset) Normalize() {
	slices.SortFunc(rs.Tables, func(a, b Table) int {
		return cmp.Or(cmp.Compare(a.Family, b.Family), cmp.Compare(a.Name, b.Name))
	})
	for ti := range rs.Tables {
		t := &rs.Tables[ti]
		slices.SortFunc(t.Sets, func(a, b Set) int { return cmp.Compare(a.Name, b.Name) })
		for si := range t.Sets {
			slices.SortFunc(t.Sets[si].Elements, compareElements)
		}
		slices.SortStableFunc(t.Chains, func(a, b Chain) int { return cmp.Compare(a.Name, b.Name) })
	}
}

// String renders the ruleset in `nft list ruleset` syntax, one set element
// per line so golden-file diffs show exactly which VM changed. The output is
// valid input for `nft -f`.
func (rs Ruleset) String() string {
	var b strings.Builder
	for _, t := range rs.Tables {
		fmt.Fprintf(&b, "table %s %s {\n", t.Family, t.Name)
		first := true
		sep := func() {
			if !first {
				b.WriteString("\n")
			}
			first = false
		}
		for _, s := range t.Sets {
			sep()
			writeSet(&b, s)
		}
		for _, c := range t.Chains {
			sep()
			writeChain(&b, t.Family, c)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func writeSet(b *strings.Builder, s Set) {
	kind := "set"
	if s.IsMap() {
		kind = "map"
	}
	fmt.Fprintf(b, "\t%s %s {\n", kind, s.Name)
	fmt.Fprintf(b, "\t\ttype %s", joinTypes(s.Key))
	if s.IsMap() {
		fmt.Fprintf(b, " : %s", s.Data)
	}
	b.WriteString("\n")
	if len(s.Elements) > 0 {
		b.WriteString("\t\telements = {\n")
		for i, e := range s.Elements {
			b.WriteString("\t\t\t" + e.String())
			if i < len(s.Elements)-1 {
				b.WriteString(",")
			}
			b.WriteString("\n")
		}
		b.WriteString("\t\t}\n")
	}
	b.WriteString("\t}\n")
}

func joinTypes(ts []DataType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, " . ")
}

// String renders the element as in an nft elements list.
func (e Element) String() string {
	parts := make([]string, len(e.Key))
	for i, v := range e.Key {
		parts[i] = v.String()
	}
	s := strings.Join(parts, " . ")
	if e.Data.Type != "" {
		s += " : " + e.Data.String()
	}
	return s
}

func writeChain(b *strings.Builder, fam Family, c Chain) {
	fmt.Fprintf(b, "\tchain %s {\n", c.Name)
	if c.Base != nil {
		fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy %s;\n",
			c.Base.Type, c.Base.Hook, priorityName(fam, c.Base.Priority), c.Base.Policy)
	}
	for _, r := range c.Rules {
		b.WriteString("\t\t" + r.String() + "\n")
	}
	b.WriteString("\t}\n")
}

// priorityName renders a priority with nft's symbolic name when it has one,
// which differs by family (bridge "filter" is -200).
func priorityName(fam Family, p int) string {
	names := map[int]string{-300: "raw", -150: "mangle", -100: "dstnat", 0: "filter", 50: "security", 100: "srcnat"}
	if fam == FamilyBridge {
		names = map[int]string{-300: "dstnat", -200: "filter", 100: "out", 300: "srcnat"}
	}
	if n, ok := names[p]; ok {
		return n
	}
	return strconv.Itoa(p)
}

// String renders the rule in nft syntax; the comment comes last.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Matches)+2)
	for _, m := range r.Matches {
		parts = append(parts, m.String())
	}
	parts = append(parts, r.Action.String())
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// String renders the match in nft syntax.
func (m Match) String() string {
	fs := make([]string, len(m.Fields))
	for i, f := range m.Fields {
		fs[i] = string(f)
	}
	s := strings.Join(fs, " . ")
	if m.Op == OpNeq {
		s += " !="
	}
	if m.Set != "" {
		return s + " @" + m.Set
	}
	return s + " " + m.Value.String()
}

// String renders the action in nft syntax.
func (a Action) String() string {
	switch a.Kind {
	case ActionJump:
		return "jump " + a.Chain
	case ActionSNATMap, ActionDNATMap:
		return fmt.Sprintf("%s to %s map @%s", a.Kind, a.MapKey, a.Map)
	}
	return string(a.Kind)
}

// Validate checks the ruleset's internal consistency: names, references to
// sets and chains, operand and key types. Plan always produces a valid
// ruleset; the adapter re-checks because it must never send the kernel a
// half-understood batch.
func (rs Ruleset) Validate() error {
	var errs []error
	seenTables := map[string]bool{}
	for _, t := range rs.Tables {
		tid := string(t.Family) + " " + t.Name
		if t.Family != FamilyIP && t.Family != FamilyBridge {
			errs = append(errs, fmt.Errorf("table %s: unsupported family", tid))
		}
		if t.Name == "" || seenTables[tid] {
			errs = append(errs, fmt.Errorf("table %q: empty or duplicate name", tid))
		}
		seenTables[tid] = true
		sets := map[string]Set{}
		for _, s := range t.Sets {
			if err := validateSet(s); err != nil {
				errs = append(errs, fmt.Errorf("table %s: set %s: %w", tid, s.Name, err))
			}
			if _, dup := sets[s.Name]; dup {
				errs = append(errs, fmt.Errorf("table %s: duplicate set %s", tid, s.Name))
			}
			sets[s.Name] = s
		}
		chains := map[string]bool{}
		for _, c := range t.Chains {
			if c.Name == "" || chains[c.Name] {
				errs = append(errs, fmt.Errorf("table %s: empty or duplicate chain name %q", tid, c.Name))
			}
			chains[c.Name] = true
		}
		for _, c := range t.Chains {
			for i, r := range c.Rules {
				if err := validateRule(r, sets, chains); err != nil {
					errs = append(errs, fmt.Errorf("table %s: chain %s: rule %d (%s): %w", tid, c.Name, i, r, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func validateSet(s Set) error {
	if s.Name == "" || len(s.Key) == 0 {
		return errors.New("needs a name and a key type")
	}
	for _, k := range append(slices.Clone(s.Key), s.Data) {
		if k != "" && k.Len() == 0 {
			return fmt.Errorf("unsupported type %q", k)
		}
	}
	seen := map[string]bool{}
	for _, e := range s.Elements {
		if len(e.Key) != len(s.Key) {
			return fmt.Errorf("element %s: want %d key values", e, len(s.Key))
		}
		for i, v := range e.Key {
			if err := checkOperand(v, s.Key[i], false); err != nil {
				return fmt.Errorf("element %s: %w", e, err)
			}
		}
		if s.IsMap() {
			if err := checkOperand(e.Data, s.Data, false); err != nil {
				return fmt.Errorf("element %s: %w", e, err)
			}
		}
		k := Element{Key: e.Key}.String()
		if seen[k] {
			return fmt.Errorf("duplicate element %s", k)
		}
		seen[k] = true
	}
	return nil
}

// checkOperand verifies that v is a well-formed value of type t.
func checkOperand(v Value, t DataType, prefixOK bool) error {
	if v.Type != t {
		return fmt.Errorf("value %s has type %q, want %q", v, v.Type, t)
	}
	switch t {
	case TypeIfname:
		if err := checkIfName(v.Name); err != nil {
			return err
		}
	case TypeIPv4Addr:
		if v.Prefix.IsValid() {
			if !prefixOK || !v.Prefix.Addr().Is4() {
				return fmt.Errorf("prefix %s not allowed here", v.Prefix)
			}
		} else if !v.Addr.Is4() {
			return fmt.Errorf("value %s is not an IPv4 address", v)
		}
	case TypeEtherAddr:
		if len(v.MAC) != 6 {
			return fmt.Errorf("value %s is not a 48-bit MAC", v)
		}
	case TypeInetService, TypeEtherType:
		if v.Num > 0xffff {
			return fmt.Errorf("value %d out of range", v.Num)
		}
	case TypeInetProto:
		if v.Num > 0xff {
			return fmt.Errorf("value %d out of range", v.Num)
		}
	}
	return nil
}

func validateRule(r Rule, sets map[string]Set, chains map[string]bool) error {
	for _, m := range r.Matches {
		if len(m.Fields) == 0 {
			return errors.New("match without a field")
		}
		if m.Op != OpEq && m.Op != OpNeq {
			return fmt.Errorf("unknown operator %q", m.Op)
		}
		types := make([]DataType, len(m.Fields))
		for i, f := range m.Fields {
			if types[i] = f.Type(); types[i] == "" {
				return fmt.Errorf("unknown field %q", f)
			}
		}
		if m.Set != "" {
			s, ok := sets[m.Set]
			if !ok {
				return fmt.Errorf("unknown set @%s", m.Set)
			}
			if s.IsMap() || !slices.Equal(s.Key, types) {
				return fmt.Errorf("set @%s has key %s, the match yields %s", m.Set, joinTypes(s.Key), joinTypes(types))
			}
			continue
		}
		if len(m.Fields) != 1 {
			return errors.New("a concatenation can only be looked up in a set")
		}
		if err := checkOperand(m.Value, types[0], true); err != nil {
			return err
		}
		if (m.Fields[0] == FieldCtState || m.Fields[0] == FieldCtStatus) && m.Op != OpEq {
			return errors.New("ct state and ct status support only 'any of' matches")
		}
	}
	switch r.Action.Kind {
	case ActionAccept, ActionDrop, ActionMasquerade:
	case ActionJump:
		if !chains[r.Action.Chain] {
			return fmt.Errorf("jump to unknown chain %q", r.Action.Chain)
		}
	case ActionSNATMap, ActionDNATMap:
		s, ok := sets[r.Action.Map]
		if !ok || !s.IsMap() {
			return fmt.Errorf("unknown map @%s", r.Action.Map)
		}
		if !slices.Equal(s.Key, []DataType{r.Action.MapKey.Type()}) || s.Data != TypeIPv4Addr {
			return fmt.Errorf("map @%s does not map %s to ipv4_addr", s.Name, r.Action.MapKey)
		}
	default:
		return fmt.Errorf("unknown action %q", r.Action.Kind)
	}
	if strings.ContainsAny(r.Comment, "\"\n") {
		return errors.New("comment must not contain quotes or newlines")
	}
	return nil
}

// checkIfName enforces the kernel's interface name rules: 1-15 bytes, no
// '/', ':' or whitespace, not "." or "..".
func checkIfName(name string) error {
	if name == "" || len(name) > maxIfNameBytes {
		return fmt.Errorf("interface name %q must be 1-%d bytes", name, maxIfNameBytes)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\"") {
		return fmt.Errorf("interface name %q contains a forbidden character", name)
	}
	return nil
}
