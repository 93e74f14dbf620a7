package nft

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vmdhq/vmd/internal/network"
)

// tableFamily maps the model's family to the kernel's.
func tableFamily(f network.Family) nftables.TableFamily {
	if f == network.FamilyBridge {
		return nftables.TableFamilyBridge
	}
	return nftables.TableFamilyIPv4
}

// Hook numbers are the same for the ip and bridge families
// (NF_INET_PRE_ROUTING == NF_BR_PRE_ROUTING, ...).
var hookNums = map[network.Hook]nftables.ChainHook{
	network.HookPrerouting:  unix.NF_INET_PRE_ROUTING,
	network.HookInput:       unix.NF_INET_LOCAL_IN,
	network.HookForward:     unix.NF_INET_FORWARD,
	network.HookOutput:      unix.NF_INET_LOCAL_OUT,
	network.HookPostrouting: unix.NF_INET_POST_ROUTING,
}

var setTypes = map[network.DataType]nftables.SetDatatype{
	network.TypeIfname:      nftables.TypeIFName,
	network.TypeIPv4Addr:    nftables.TypeIPAddr,
	network.TypeEtherAddr:   nftables.TypeEtherAddr,
	network.TypeEtherType:   nftables.TypeEtherType,
	network.TypeInetProto:   nftables.TypeInetProto,
	network.TypeInetService: nftables.TypeInetService,
	network.TypeCtState:     nftables.TypeCTState,
	network.TypeCtStatus:    nftables.TypeCTStatus,
}

// fieldLoad says how the kernel loads a field into a register. Exactly one
// of meta, payload or ct is set.
type fieldLoad struct {
	meta    *expr.Meta
	payload *expr.Payload
	ct      *expr.Ct
}

func payload(base expr.PayloadBase, off, n uint32) fieldLoad {
	return fieldLoad{payload: &expr.Payload{Base: base, Offset: off, Len: n}}
}

// fieldLoads is the single source of truth for field encodings; the decoder
// inverts it. ARP offsets assume Ethernet/IPv4 ARP (hlen 6, plen 4), as nft
// does.
var fieldLoads = map[network.Field]fieldLoad{
	network.FieldIIFName:       {meta: &expr.Meta{Key: expr.MetaKeyIIFNAME}},
	network.FieldOIFName:       {meta: &expr.Meta{Key: expr.MetaKeyOIFNAME}},
	network.FieldL4Proto:       {meta: &expr.Meta{Key: expr.MetaKeyL4PROTO}},
	network.FieldEtherSaddr:    payload(expr.PayloadBaseLLHeader, 6, 6),
	network.FieldEtherType:     payload(expr.PayloadBaseLLHeader, 12, 2),
	network.FieldIPProtocol:    payload(expr.PayloadBaseNetworkHeader, 9, 1),
	network.FieldIPSaddr:       payload(expr.PayloadBaseNetworkHeader, 12, 4),
	network.FieldIPDaddr:       payload(expr.PayloadBaseNetworkHeader, 16, 4),
	network.FieldARPSaddrEther: payload(expr.PayloadBaseNetworkHeader, 8, 6),
	network.FieldARPSaddrIP:    payload(expr.PayloadBaseNetworkHeader, 14, 4),
	network.FieldUDPSport:      payload(expr.PayloadBaseTransportHeader, 0, 2),
	network.FieldUDPDport:      payload(expr.PayloadBaseTransportHeader, 2, 2),
	network.FieldTCPDport:      payload(expr.PayloadBaseTransportHeader, 2, 2),
	network.FieldCtState:       {ct: &expr.Ct{Key: expr.CtKeySTATE}},
	network.FieldCtStatus:      {ct: &expr.Ct{Key: expr.CtKeySTATUS}},
}

// loadExpr returns the expression that loads f into reg.
func loadExpr(f network.Field, reg uint32) (expr.Any, error) {
	l, ok := fieldLoads[f]
	switch {
	case !ok:
		return nil, fmt.Errorf("no encoding for field %q", f)
	case l.meta != nil:
		m := *l.meta
		m.Register = reg
		return &m, nil
	case l.payload != nil:
		p := *l.payload
		p.DestRegister = reg
		return &p, nil
	default:
		c := *l.ct
		c.Register = reg
		return &c, nil
	}
}

// valueBytes is the kernel representation of a value: network byte order
// for addresses, ports and ethertypes, host order for the ct state bitmask,
// NUL-padded IFNAMSIZ for interface names.
func valueBytes(v network.Value) []byte {
	switch v.Type {
	case network.TypeIfname:
		b := make([]byte, 16)
		copy(b, v.Name)
		return b
	case network.TypeIPv4Addr:
		if v.Prefix.IsValid() {
			a := v.Prefix.Addr().As4()
			return a[:]
		}
		a := v.Addr.As4()
		return a[:]
	case network.TypeEtherAddr:
		return append([]byte(nil), v.MAC...)
	case network.TypeInetService, network.TypeEtherType:
		return binary.BigEndian.AppendUint16(nil, uint16(v.Num))
	case network.TypeInetProto:
		return []byte{byte(v.Num)}
	case network.TypeCtState, network.TypeCtStatus:
		return binaryutil.NativeEndian.PutUint32(v.Num)
	}
	return nil
}

// keyBytes encodes a set key; concatenations pad each part to 4 bytes.
func keyBytes(vals []network.Value) []byte {
	if len(vals) == 1 {
		return valueBytes(vals[0])
	}
	var b []byte
	for _, v := range vals {
		p := valueBytes(v)
		b = append(b, p...)
		if pad := len(p) % 4; pad != 0 {
			b = append(b, make([]byte, 4-pad)...)
		}
	}
	return b
}

func prefixMask(bitsOn int) []byte {
	m := uint32(0)
	if bitsOn > 0 {
		m = ^uint32(0) << (32 - bitsOn)
	}
	return binary.BigEndian.AppendUint32(nil, m)
}

// queueTable queues the table with its sets, chains and rules.
func queueTable(c *nftables.Conn, t network.Table) error {
	kt := c.AddTable(&nftables.Table{Family: tableFamily(t.Family), Name: t.Name})
	sets := map[string]*nftables.Set{}
	for _, s := range t.Sets {
		ks, err := queueSet(c, kt, s)
		if err != nil {
			return fmt.Errorf("table %s %s: set %s: %w", t.Family, t.Name, s.Name, err)
		}
		sets[s.Name] = ks
	}
	chains := map[string]*nftables.Chain{}
	for _, ch := range t.Chains {
		kc := &nftables.Chain{Name: ch.Name, Table: kt}
		if b := ch.Base; b != nil {
			hook := hookNums[b.Hook]
			prio := nftables.ChainPriority(b.Priority)
			policy := nftables.ChainPolicyAccept
			if b.Policy == network.PolicyDrop {
				policy = nftables.ChainPolicyDrop
			}
			kc.Type = nftables.ChainType(b.Type)
			kc.Hooknum, kc.Priority, kc.Policy = &hook, &prio, &policy
		}
		chains[ch.Name] = c.AddChain(kc)
	}
	for _, ch := range t.Chains {
		for i, r := range ch.Rules {
			exprs, err := ruleExprs(r, sets)
			if err != nil {
				return fmt.Errorf("table %s %s: chain %s: rule %d: %w", t.Family, t.Name, ch.Name, i, err)
			}
			kr := &nftables.Rule{Table: kt, Chain: chains[ch.Name], Exprs: exprs}
			if r.Comment != "" {
				kr.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
			}
			c.AddRule(kr)
		}
	}
	return nil
}

func queueSet(c *nftables.Conn, t *nftables.Table, s network.Set) (*nftables.Set, error) {
	keyTypes := make([]nftables.SetDatatype, len(s.Key))
	for i, k := range s.Key {
		kt, ok := setTypes[k]
		if !ok {
			return nil, fmt.Errorf("no kernel type for %q", k)
		}
		keyTypes[i] = kt
	}
	ks := &nftables.Set{Table: t, Name: s.Name, KeyType: keyTypes[0]}
	if len(keyTypes) > 1 {
		kt, err := nftables.ConcatSetType(keyTypes...)
		if err != nil {
			return nil, fmt.Errorf("building key type: %w", err)
		}
		ks.KeyType, ks.Concatenation = kt, true
	}
	if s.IsMap() {
		dt, ok := setTypes[s.Data]
		if !ok {
			return nil, fmt.Errorf("no kernel type for %q", s.Data)
		}
		ks.IsMap, ks.DataType = true, dt
	}
	elems := make([]nftables.SetElement, 0, len(s.Elements))
	for _, e := range s.Elements {
		el := nftables.SetElement{Key: keyBytes(e.Key)}
		if s.IsMap() {
			el.Val = valueBytes(e.Data)
		}
		elems = append(elems, el)
	}
	if err := c.AddSet(ks, elems); err != nil {
		return nil, fmt.Errorf("queueing: %w", err)
	}
	return ks, nil
}

// ruleExprs encodes one rule. Single loads go to NFT_REG_1 as nft does;
// concatenations fill consecutive 32-bit registers from NFT_REG32_00 (the
// same storage as NFT_REG_1), each part rounded up to 4 bytes.
func ruleExprs(r network.Rule, sets map[string]*nftables.Set) ([]expr.Any, error) {
	var out []expr.Any
	for _, m := range r.Matches {
		es, err := matchExprs(m, sets)
		if err != nil {
			return nil, fmt.Errorf("match %s: %w", m, err)
		}
		out = append(out, es...)
	}
	a := r.Action
	switch a.Kind {
	case network.ActionAccept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case network.ActionDrop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case network.ActionJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: a.Chain})
	case network.ActionMasquerade:
		out = append(out, &expr.Masq{})
	case network.ActionSNATMap, network.ActionDNATMap:
		s, ok := sets[a.Map]
		if !ok {
			return nil, fmt.Errorf("unknown map @%s", a.Map)
		}
		load, err := loadExpr(a.MapKey, unix.NFT_REG_1)
		if err != nil {
			return nil, err
		}
		typ := expr.NATTypeSourceNAT
		if a.Kind == network.ActionDNATMap {
			typ = expr.NATTypeDestNAT
		}
		out = append(out, load,
			&expr.Lookup{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
			&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: unix.NFT_REG_1, RegAddrMax: unix.NFT_REG_1})
	default:
		return nil, fmt.Errorf("no encoding for action %q", a.Kind)
	}
	return out, nil
}

func matchExprs(m network.Match, sets map[string]*nftables.Set) ([]expr.Any, error) {
	if m.Set != "" {
		s, ok := sets[m.Set]
		if !ok {
			return nil, fmt.Errorf("unknown set @%s", m.Set)
		}
		var out []expr.Any
		src := uint32(unix.NFT_REG_1)
		if len(m.Fields) > 1 {
			src = unix.NFT_REG32_00
		}
		reg := src
		for _, f := range m.Fields {
			load, err := loadExpr(f, reg)
			if err != nil {
				return nil, err
			}
			out = append(out, load)
			reg = nextReg(reg, f.Type().Len())
		}
		return append(out, &expr.Lookup{SourceRegister: src, SetName: s.Name, SetID: s.ID, Invert: m.Op == network.OpNeq}), nil
	}
	if len(m.Fields) != 1 {
		return nil, fmt.Errorf("a concatenation needs a set")
	}
	f := m.Fields[0]
	load, err := loadExpr(f, unix.NFT_REG_1)
	if err != nil {
		return nil, err
	}
	op := expr.CmpOpEq
	if m.Op == network.OpNeq {
		op = expr.CmpOpNeq
	}
	switch {
	case f == network.FieldCtState || f == network.FieldCtStatus:
		// "ct state a,b": (state & mask) != 0; likewise for ct status.
		return []expr.Any{load,
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
				Mask: valueBytes(m.Value), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: make([]byte, 4)},
		}, nil
	case m.Value.IsPrefix():
		return []expr.Any{load,
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4,
				Mask: prefixMask(m.Value.Prefix.Bits()), Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: unix.NFT_REG_1, Data: valueBytes(m.Value)},
		}, nil
	default:
		return []expr.Any{load, &expr.Cmp{Op: op, Register: unix.NFT_REG_1, Data: valueBytes(m.Value)}}, nil
	}
}

// nextReg advances past a value of n bytes in 32-bit register units.
func nextReg(reg uint32, n int) uint32 {
	return reg + uint32((n+3)/4)
}

// maskBits counts the leading ones of a 4-byte prefix mask, or -1 if the
// mask is not a prefix.
func maskBits(mask []byte) int {
	if len(mask) != 4 {
		return -1
	}
	m := binary.BigEndian.Uint32(mask)
	n := bits.LeadingZeros32(^m)
	if n < 32 && m<<n != 0 {
		return -1
	}
	return n
}
