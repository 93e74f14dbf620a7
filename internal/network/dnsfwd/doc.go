// Package dnsfwd is the DNS forwarder vmd runs on each tenant gateway, so
// that guests which got the gateway as their resolver (DHCP option 6 and
// cloud-init, when network.dns is empty) can resolve names.
//
// It forwards rather than handing guests the host's resolvers because
// those are often only reachable from the host itself: systemd-resolved's
// 127.0.0.53, a resolver on a management network, or one that only allows
// the host's address. vmd runs on the host, so it reaches them; guests only
// reach their gateway (internal/network/planner.go, chain guest_to_host).
// See ParseResolvConf for reading the host's list.
//
// Design, and why:
//
//   - The caller opens the listening sockets (UDP and TCP on gateway:53)
//     because they must be created in the network namespace holding the
//     bridges, while upstream sockets must be created in vmd's own
//     namespace (where 127.0.0.53 is); the package opens no listening
//     socket, and upstream sockets come from an injectable DialFunc.
//   - Messages are relayed as-is. The forwarder reads only the 12-byte
//     header: it drops what is not a query (short, or QR set: a response
//     sent to a resolver is a reflection or a loop), and accepts as the
//     answer only a response with the query's ID and opcode. It keeps no
//     cache and rewrites nothing, so EDNS, DNSSEC bits and truncation
//     (TC) reach the guest exactly as the upstream sent them; a truncated
//     answer makes the guest retry over TCP, which the forwarder serves
//     too. The one message it writes itself is SERVFAIL when no upstream
//     answered (see servFail).
//   - UDP: every query gets a fresh connected UDP socket towards the
//     upstream. The kernel then picks a random source port per query and
//     discards datagrams from any other address (which the forwarder
//     checks again), so an off-path attacker has to guess the port as
//     well as the guest's random ID. There is no ID rewriting and
//     no shared state between queries. The price is one socket per query
//     in flight, which is why in-flight queries are capped (MaxInflight):
//     a flooding guest gets drops, not vmd's file descriptors.
//   - Upstreams are tried in order, each once, with a per-attempt timeout
//     (Timeout), like glibc without "options rotate": a server that does
//     not answer, answers with an unmatched reply, or answers SERVFAIL,
//     NOTIMP or REFUSED moves the query to the next one. If none gives a
//     usable answer, the last of those error replies is relayed, or else a
//     SERVFAIL the forwarder builds, so a guest learns quickly that the
//     name cannot be resolved now rather than waiting out its own timeout
//     when the upstream is down (a connection refused fails at once).
//   - TCP: each guest connection carries 2-byte length-prefixed messages
//     (RFC 7766), handled one at a time: read a query, relay it, write the
//     reply. The forwarder keeps one upstream TCP connection per upstream
//     for the life of the guest connection and redials once if a reused
//     one turns out to have been closed by the upstream. Connections are
//     capped (MaxConns: beyond it a new connection is closed at once) and
//     closed after IdleTimeout without a complete query.
//   - Clients, when set, restricts which source addresses are served.
//     vmd's firewall already limits guests to their own gateway, but
//     Linux accepts packets for a local address on any interface, so a
//     host on the uplink's network that routes the tenant pool to the
//     host could otherwise use the gateway as an open resolver.
//   - Serve returns when its context ends or a socket fails, and not
//     before every goroutine it started has finished; Close stops it
//     from outside. Failures are logged at debug level (a guest or an
//     upstream can cause any number of them); counters are in Stats.
package dnsfwd
