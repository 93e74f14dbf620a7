package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/vmdhq/vmd/internal/network"
)

// readTable decodes one kernel table into the model.
func readTable(c *nftables.Conn, kt *nftables.Table, fam network.Family) (network.Table, error) {
	t := network.Table{Family: fam, Name: kt.Name}
	ksets, err := c.GetSets(kt)
	if err != nil {
		return t, fmt.Errorf("listing sets: %w", err)
	}
	for _, ks := range ksets {
		if ks.Anonymous {
			continue // belongs to a rule; vmd's encoder never creates one
		}
		s, err := readSet(c, ks)
		if err != nil {
			return t, fmt.Errorf("set %s: %w", ks.Name, err)
		}
		t.Sets = append(t.Sets, s)
	}
	kchains, err := c.ListChainsOfTableFamily(kt.Family)
	if err != nil {
		return t, fmt.Errorf("listing chains: %w", err)
	}
	for _, kc := range kchains {
		if kc.Table == nil || kc.Table.Name != kt.Name {
			continue
		}
		ch, err := readChain(kc)
		if err != nil {
			return t, fmt.Errorf("chain %s: %w", kc.Name, err)
		}
		krules, err := c.GetRules(kt, kc)
		if err != nil {
			return t, fmt.Errorf("chain %s: listing rules: %w", kc.Name, err)
		}
		for _, kr := range krules {
			r, err := decodeRule(kr)
			if err != nil {
				return t, fmt.Errorf("chain %s: rule handle %d: %w", kc.Name, kr.Handle, err)
			}
			ch.Rules = append(ch.Rules, r)
		}
		t.Chains = append(t.Chains, ch)
	}
	return t, nil
}

func readChain(kc *nftables.Chain) (network.Chain, error) {
	ch := network.Chain{Name: kc.Name}
	if kc.Hooknum == nil {
		return ch, nil
	}
	b := &network.BaseChain{Type: network.ChainType(kc.Type), Policy: network.PolicyAccept}
	found := false
	for h, n := range hookNums {
		if n == *kc.Hooknum {
			b.Hook, found = h, true
		}
	}
	if !found {
		return ch, fmt.Errorf("unsupported hook %d", *kc.Hooknum)
	}
	if kc.Priority != nil {
		b.Priority = int(*kc.Priority)
	}
	if kc.Policy != nil && *kc.Policy == nftables.ChainPolicyDrop {
		b.Policy = network.PolicyDrop
	}
	ch.Base = b
	return ch, nil
}

func modelType(name string) (network.DataType, error) {
	for m, k := range setTypes {
		if k.Name == name {
			return m, nil
		}
	}
	return "", fmt.Errorf("unsupported data type %q", name)
}

func readSet(c *nftables.Conn, ks *nftables.Set) (network.Set, error) {
	s := network.Set{Name: ks.Name}
	for _, n := range strings.Split(ks.KeyType.Name, " . ") {
		t, err := modelType(n)
		if err != nil {
			return s, err
		}
		s.Key = append(s.Key, t)
	}
	if ks.IsMap {
		t, err := modelType(ks.DataType.Name)
		if err != nil {
			return s, err
		}
		s.Data = t
	}
	elems, err := c.GetSetElements(ks)
	if err != nil {
		return s, fmt.Errorf("listing elements: %w", err)
	}
	for _, el := range elems {
		e, err := decodeElement(s, el)
		if err != nil {
			return s, err
		}
		s.Elements = append(s.Elements, e)
	}
	return s, nil
}

func decodeElement(s network.Set, el nftables.SetElement) (network.Element, error) {
	var e network.Element
	key := el.Key
	for _, t := range s.Key {
		n := t.Len()
		step := n
		if len(s.Key) > 1 {
			step = (n + 3) / 4 * 4
		}
		if len(key) < n {
			return e, fmt.Errorf("element key %x too short for %s", el.Key, t)
		}
		v, err := decodeValue(t, key[:n])
		if err != nil {
			return e, err
		}
		e.Key = append(e.Key, v)
		key = key[min(step, len(key)):]
	}
	if s.IsMap() {
		v, err := decodeValue(s.Data, el.Val)
		if err != nil {
			return e, err
		}
		e.Data = v
	}
	return e, nil
}

// decodeValue inverts valueBytes.
func decodeValue(t network.DataType, b []byte) (network.Value, error) {
	if len(b) < t.Len() {
		return network.Value{}, fmt.Errorf("%d bytes are too short for %s", len(b), t)
	}
	b = b[:t.Len()]
	switch t {
	case network.TypeIfname:
		name, _, _ := strings.Cut(string(b), "\x00")
		return network.IfNameValue(name), nil
	case network.TypeIPv4Addr:
		return network.AddrValue(netip.AddrFrom4([4]byte(b))), nil
	case network.TypeEtherAddr:
		return network.MACValue(net.HardwareAddr(b)), nil
	case network.TypeInetService:
		return network.PortValue(binary.BigEndian.Uint16(b)), nil
	case network.TypeEtherType:
		return network.EtherTypeValue(binary.BigEndian.Uint16(b)), nil
	case network.TypeInetProto:
		return network.ProtoValue(b[0]), nil
	case network.TypeCtState:
		return network.CtStateValue(binaryutil.NativeEndian.Uint32(b)), nil
	case network.TypeCtStatus:
		return network.CtStatusValue(binaryutil.NativeEndian.Uint32(b)), nil
	}
	return network.Value{}, fmt.Errorf("unsupported type %q", t)
}

// decoder walks a rule's expressions the way the kernel evaluates them:
// loads fill registers, and the next comparison, lookup or statement
// consumes them.
type decoder struct {
	rule    network.Rule
	pending []network.Field
	mask    []byte
	natMap  string
	// l4 is the last protocol the rule matched; it tells "tcp dport" from
	// "udp dport", which load the same transport header bytes.
	l4 uint32
}

func decodeRule(kr *nftables.Rule) (network.Rule, error) {
	d := &decoder{}
	if cm, ok := userdata.GetString(kr.UserData, userdata.TypeComment); ok {
		d.rule.Comment = cm
	}
	for _, e := range kr.Exprs {
		if err := d.step(e); err != nil {
			return network.Rule{}, err
		}
	}
	if d.rule.Action.Kind == "" {
		return network.Rule{}, errors.New("rule has no verdict or statement vmd understands")
	}
	if len(d.pending) > 0 {
		return network.Rule{}, fmt.Errorf("loads of %v are never used", d.pending)
	}
	return d.rule, nil
}

func (d *decoder) load(e expr.Any) (network.Field, bool) {
	for f, l := range fieldLoads {
		switch x := e.(type) {
		case *expr.Meta:
			if l.meta != nil && !x.SourceRegister && l.meta.Key == x.Key {
				return f, true
			}
		case *expr.Payload:
			if l.payload != nil && x.OperationType == expr.PayloadLoad && l.payload.Base == x.Base &&
				l.payload.Offset == x.Offset && l.payload.Len == x.Len {
				if x.Base == expr.PayloadBaseTransportHeader && x.Offset == 2 {
					// Same bytes for tcp and udp: the protocol matched earlier decides.
					if d.l4 == network.ProtoTCP {
						return network.FieldTCPDport, true
					}
					return network.FieldUDPDport, true
				}
				return f, true
			}
		case *expr.Ct:
			if l.ct != nil && !x.SourceRegister && l.ct.Key == x.Key && l.ct.Direction == x.Direction {
				return f, true
			}
		}
	}
	return "", false
}

func (d *decoder) step(e expr.Any) error {
	if f, ok := d.load(e); ok {
		d.pending = append(d.pending, f)
		return nil
	}
	switch x := e.(type) {
	case *expr.Counter:
		return nil
	case *expr.Bitwise:
		d.mask = x.Mask
		return nil
	case *expr.Cmp:
		return d.cmp(x)
	case *expr.Lookup:
		if x.IsDestRegSet {
			if len(d.pending) != 1 {
				return fmt.Errorf("map lookup @%s needs one key field, have %v", x.SetName, d.pending)
			}
			d.natMap = x.SetName
			return nil
		}
		op := network.OpEq
		if x.Invert {
			op = network.OpNeq
		}
		d.rule.Matches = append(d.rule.Matches, network.Match{Fields: d.pending, Op: op, Set: x.SetName})
		d.pending = nil
		return nil
	case *expr.NAT:
		if d.natMap == "" || len(d.pending) != 1 {
			return errors.New("nat statement without a map lookup")
		}
		kind := network.ActionSNATMap
		if x.Type == expr.NATTypeDestNAT {
			kind = network.ActionDNATMap
		}
		d.rule.Action = network.Action{Kind: kind, MapKey: d.pending[0], Map: d.natMap}
		d.pending, d.natMap = nil, ""
		return nil
	case *expr.Masq:
		d.rule.Action = network.Action{Kind: network.ActionMasquerade}
		return nil
	case *expr.Verdict:
		switch x.Kind {
		case expr.VerdictAccept:
			d.rule.Action = network.Action{Kind: network.ActionAccept}
		case expr.VerdictDrop:
			d.rule.Action = network.Action{Kind: network.ActionDrop}
		case expr.VerdictJump:
			d.rule.Action = network.Action{Kind: network.ActionJump, Chain: x.Chain}
		default:
			return fmt.Errorf("unsupported verdict %v", x.Kind)
		}
		return nil
	}
	return fmt.Errorf("unsupported expression %T", e)
}

func (d *decoder) cmp(x *expr.Cmp) error {
	if len(d.pending) != 1 {
		return fmt.Errorf("comparison needs one loaded field, have %v", d.pending)
	}
	f := d.pending[0]
	mask := d.mask
	d.pending, d.mask = nil, nil
	var op network.Op
	switch x.Op {
	case expr.CmpOpEq:
		op = network.OpEq
	case expr.CmpOpNeq:
		op = network.OpNeq
	default:
		return fmt.Errorf("unsupported comparison %v on %s", x.Op, f)
	}
	if f == network.FieldCtState || f == network.FieldCtStatus {
		if mask == nil || op != network.OpNeq {
			return fmt.Errorf("unsupported %s comparison", f)
		}
		v, err := decodeValue(f.Type(), mask)
		if err != nil {
			return err
		}
		d.rule.Matches = append(d.rule.Matches, network.Match{Fields: []network.Field{f}, Op: network.OpEq, Value: v})
		return nil
	}
	v, err := decodeValue(f.Type(), x.Data)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	if mask != nil {
		n := maskBits(mask)
		if f.Type() != network.TypeIPv4Addr || n < 0 {
			return fmt.Errorf("unsupported mask %x on %s", mask, f)
		}
		v = network.PrefixValue(netip.PrefixFrom(v.Addr, n))
	}
	if f == network.FieldL4Proto || f == network.FieldIPProtocol {
		d.l4 = v.Num
	}
	d.rule.Matches = append(d.rule.Matches, network.Match{Fields: []network.Field{f}, Op: op, Value: v})
	return nil
}
