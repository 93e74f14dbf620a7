package dnsfwd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// maxNameservers is resolv.conf's MAXNS: glibc, musl and Go's resolver
// use only the first three valid nameserver lines.
const maxNameservers = 3

// defaultUpstreams is what a resolv.conf without a usable nameserver line
// means: "the name server on the local machine" (resolv.conf(5)). The
// list is Go's net package default (127.0.0.1 and ::1).
var defaultUpstreams = []netip.AddrPort{
	netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 53),
	netip.AddrPortFrom(netip.IPv6Loopback(), 53),
}

// ParseResolvConf returns the upstream resolvers that a resolv.conf(5)
// file (usually the host's /etc/resolv.conf) names, on port 53, in file
// order. It reads the file the way the host's own resolver does, so that
// guests resolve through vmd exactly as host processes do:
//
//   - only `nameserver ADDR` lines count; `#` and `;` start comment lines
//     and anything after the address is ignored;
//   - ADDR is an IPv4 or IPv6 literal (an IPv6 zone such as fe80::1%eth0
//     is kept, an IPv4-mapped IPv6 address becomes IPv4); an unparsable
//     address is skipped, as glibc and Go skip it;
//   - at most the first three valid lines are used (MAXNS);
//   - loopback resolvers such as systemd-resolved's 127.0.0.53 are kept:
//     vmd runs on the host and can reach them, which is why it forwards
//     rather than handing the host's resolvers to guests;
//   - a file with no usable nameserver line yields 127.0.0.1:53 and
//     [::1]:53, the documented default.
//
// The only errors are read errors.
func ParseResolvConf(r io.Reader) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading resolv.conf: %w", err)
		}
		if up, ok := parseNameserverLine(line); ok && len(out) < maxNameservers {
			out = append(out, up)
		}
		if err != nil {
			break
		}
	}
	if len(out) == 0 {
		return append([]netip.AddrPort(nil), defaultUpstreams...), nil
	}
	return out, nil
}

// parseNameserverLine parses one resolv.conf line, the same way as Go's
// net package (dnsconfig_unix.go): comment lines start with '#' or ';',
// fields are separated by ASCII white space.
func parseNameserverLine(line string) (netip.AddrPort, bool) {
	if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
		return netip.AddrPort{}, false
	}
	f := strings.FieldsFunc(line, isSpace)
	if len(f) < 2 || f[0] != "nameserver" {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), 53), true
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\r', '\n', '\v', '\f':
		return true
	}
	return false
}
