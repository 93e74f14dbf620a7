package cloudinit

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/internal/errdefs"
)

func TestNetworkConfigValidate(t *testing.T) {
	gw := netip.MustParseAddr("10.77.0.1")
	tests := []struct {
		name    string
		cfg     *NetworkConfig
		wantErr []string // substrings, one per expected field error; nil = valid
	}{
		{name: "lab static config", cfg: labNetwork()},
		{name: "dhcp by interface name", cfg: &NetworkConfig{Ethernets: map[string]Ethernet{"eth0": {DHCP4: true}}}},
		{name: "ipv6 static", cfg: &NetworkConfig{Ethernets: map[string]Ethernet{"eth0": {
			Addresses: []netip.Prefix{netip.MustParsePrefix("fd00::10/64")},
			Routes:    []Route{DefaultRoute(netip.MustParseAddr("fd00::1"))},
		}}}},
		{name: "nil", cfg: nil, wantErr: []string{"network-config.ethernets: Required"}},
		{name: "no ethernets", cfg: &NetworkConfig{}, wantErr: []string{"network-config.ethernets: Required"}},
		{
			name: "every field wrong",
			cfg: &NetworkConfig{Ethernets: map[string]Ethernet{"0bad": {
				Match:       &Match{MACAddress: "52:54:00:12:34"},
				SetName:     "name-that-is-far-too-long",
				Addresses:   []netip.Prefix{{}, netip.MustParsePrefix("0.0.0.0/0")},
				Routes:      []Route{{Via: gw, Metric: -1}, {To: netip.MustParsePrefix("::/0"), Via: gw}, {To: netip.MustParsePrefix("10.0.0.0/8")}},
				Nameservers: &Nameservers{Addresses: []netip.Addr{{}}, Search: []string{"Not_A_Domain"}},
				MTU:         20,
			}}},
			wantErr: []string{
				`network-config.ethernets[0bad]: Invalid value: "0bad"`,
				`ethernets[0bad].match.macaddress: Invalid value`,
				`ethernets[0bad].set-name: Invalid value`,
				`ethernets[0bad].addresses[0]: Invalid value`,
				`ethernets[0bad].addresses[1]: Invalid value`,
				`ethernets[0bad].routes[0].to: Required`,
				`ethernets[0bad].routes[0].metric: Invalid value`,
				`ethernets[0bad].routes[1].via: Invalid value: "10.77.0.1": must be of the same address family`,
				`ethernets[0bad].routes[2].via: Required`,
				`ethernets[0bad].nameservers.addresses[0]: Invalid value`,
				`ethernets[0bad].nameservers.search[0]: Invalid value`,
				`ethernets[0bad].mtu: Invalid value: 20`,
			},
		},
		{
			name:    "set-name without match",
			cfg:     &NetworkConfig{Ethernets: map[string]Ethernet{"eth0": {SetName: "eth0"}}},
			wantErr: []string{"ethernets[eth0].match: Required"},
		},
		{
			name:    "interface name that YAML would read as a number",
			cfg:     &NetworkConfig{Ethernets: map[string]Ethernet{"1": {DHCP4: true}}},
			wantErr: []string{`ethernets[1]: Invalid value: "1"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Validate() = %v, want an error matching ErrInvalid", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			// One field error per expectation: nothing unexpected reported.
			if got := strings.Count(err.Error(), "network-config."); got != len(tt.wantErr) {
				t.Errorf("got %d field errors, want %d:\n%v", got, len(tt.wantErr), err)
			}
		})
	}
}

func TestNetworkConfigBytesRejectsInvalid(t *testing.T) {
	s := Seed{InstanceID: "x", Network: &NetworkConfig{Ethernets: map[string]Ethernet{"eth0": {Match: &Match{MACAddress: "nope"}}}}}
	if _, err := s.NetworkConfigBytes(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("NetworkConfigBytes() error = %v, want ErrInvalid", err)
	}
	if b, err := (Seed{}).NetworkConfigBytes(); b != nil || err != nil {
		t.Fatalf("no network: got (%q, %v), want (nil, nil)", b, err)
	}
}

func TestDefaultRoute(t *testing.T) {
	tests := []struct {
		name, gw, wantTo, wantVia string
	}{
		{name: "ipv4", gw: "10.77.0.1", wantTo: "0.0.0.0/0", wantVia: "10.77.0.1"},
		{name: "ipv6", gw: "fd00::1", wantTo: "::/0", wantVia: "fd00::1"},
		{name: "ipv4-mapped ipv6 is ipv4", gw: "::ffff:10.77.0.1", wantTo: "0.0.0.0/0", wantVia: "10.77.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := DefaultRoute(netip.MustParseAddr(tt.gw))
			if r.To.String() != tt.wantTo || r.Via.String() != tt.wantVia {
				t.Errorf("DefaultRoute(%s) = %s via %s, want %s via %s", tt.gw, r.To, r.Via, tt.wantTo, tt.wantVia)
			}
		})
	}
}

func TestNetworkConfigClone(t *testing.T) {
	orig := labNetwork()
	c := orig.Clone()
	e := c.Ethernets["eth0"]
	e.Match.MACAddress = "52:54:00:00:00:01"
	*e.AcceptRA = true
	e.Addresses[0] = netip.MustParsePrefix("192.0.2.1/24")
	e.Routes[0].Metric = 5
	e.Nameservers.Addresses[0] = netip.MustParseAddr("192.0.2.53")
	c.Ethernets["eth1"] = Ethernet{}
	want := labNetwork()
	gotB, err := orig.render()
	if err != nil {
		t.Fatal(err)
	}
	wantB, err := want.render()
	if err != nil {
		t.Fatal(err)
	}
	if string(gotB) != string(wantB) {
		t.Errorf("changing the clone changed the original:\n%s", gotB)
	}
	if (*NetworkConfig)(nil).Clone() != nil {
		t.Error("Clone of nil is not nil")
	}
}

// TestNetworkConfigRoundTrip decodes the rendered file and checks every
// value arrives as the same string (MACs canonicalised).
func TestNetworkConfigRoundTrip(t *testing.T) {
	cfg := labNetwork()
	b, err := Seed{Network: cfg}.NetworkConfigBytes()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Version   int `json:"version"`
		Ethernets map[string]struct {
			Match       map[string]string `json:"match"`
			SetName     string            `json:"set-name"`
			AcceptRA    *bool             `json:"accept-ra"`
			Addresses   []string          `json:"addresses"`
			Routes      []map[string]any  `json:"routes"`
			Nameservers map[string]any    `json:"nameservers"`
		} `json:"ethernets"`
	}
	if err := yaml.UnmarshalStrict(b, &got); err != nil {
		t.Fatalf("network-config does not decode: %v\n%s", err, b)
	}
	e := got.Ethernets["eth0"]
	if got.Version != 2 || e.Match["macaddress"] != "52:54:00:12:34:56" || e.SetName != "eth0" ||
		e.AcceptRA == nil || *e.AcceptRA || len(e.Addresses) != 1 || e.Addresses[0] != "10.77.0.10/24" ||
		len(e.Routes) != 1 || e.Routes[0]["to"] != "0.0.0.0/0" || e.Routes[0]["via"] != "10.77.0.1" {
		t.Errorf("decoded %+v from\n%s", got, b)
	}
}
