package cloudinit

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

func ptr[T any](v T) *T { return &v }

// labNetwork is the lab's static seed (shared/lab/seed/network-config) as a
// typed value, with a MAC whose octets are all decimal digits: unquoted,
// YAML 1.1 reads it as a base-60 integer.
func labNetwork() *NetworkConfig {
	return &NetworkConfig{Ethernets: map[string]Ethernet{
		"eth0": {
			Match:       &Match{MACAddress: "52:54:00:12:34:56"},
			SetName:     "eth0",
			AcceptRA:    ptr(false),
			Addresses:   []netip.Prefix{netip.MustParsePrefix("10.77.0.10/24")},
			Routes:      []Route{DefaultRoute(netip.MustParseAddr("10.77.0.1"))},
			Nameservers: &Nameservers{Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.1")}},
		},
	}}
}

func TestSeedFor(t *testing.T) {
	vm := func(ns, name string, mut func(*v1alpha1.VMInstanceSpec)) *v1alpha1.VMInstance {
		v := &v1alpha1.VMInstance{ObjectMeta: v1alpha1.ObjectMeta{Namespace: ns, Name: name}}
		if mut != nil {
			mut(&v.Spec)
		}
		return v
	}
	tests := []struct {
		name string
		vm   *v1alpha1.VMInstance
		net  *NetworkConfig
		want Seed
	}{
		{
			// UUID pinned from `printf %s default-vm-instance-web- | sha256sum`,
			// cut as Cozystack's stableUuid helper does.
			name: "minimal spec: default namespace and default instance type",
			vm:   vm("", "web", nil),
			want: Seed{InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web", InstanceType: "u1.medium"},
		},
		{
			name: "seed, keys, cloudInit and network",
			vm: vm("tenant-a", "web", func(s *v1alpha1.VMInstanceSpec) {
				s.CloudInitSeed = "2024-06"
				s.InstanceType = ptr("u1.large")
				s.SSHKeys = []string{"ssh-ed25519 AAAA k1"}
				s.CloudInit = "#cloud-config\nruncmd: [true]\n"
			}),
			net: labNetwork(),
			want: Seed{
				InstanceID: "14548f23-9b7d-432e-94d2-766bcac61428", Hostname: "vm-instance-web", InstanceType: "u1.large",
				PublicKeys: []string{"ssh-ed25519 AAAA k1"}, UserData: "#cloud-config\nruncmd: [true]\n", Network: labNetwork(),
			},
		},
		{
			name: "custom sizing publishes no instance type",
			vm:   vm("default", "web", func(s *v1alpha1.VMInstanceSpec) { s.InstanceType = ptr("") }),
			want: Seed{InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SeedFor(tt.vm, tt.net)
			gotDocs, err := got.documents()
			if err != nil {
				t.Fatal(err)
			}
			wantDocs, err := tt.want.documents()
			if err != nil {
				t.Fatal(err)
			}
			if got.InstanceID != tt.want.InstanceID || got.Hostname != tt.want.Hostname || got.InstanceType != tt.want.InstanceType {
				t.Errorf("identity = (%q, %q, %q), want (%q, %q, %q)", got.InstanceID, got.Hostname, got.InstanceType, tt.want.InstanceID, tt.want.Hostname, tt.want.InstanceType)
			}
			if len(gotDocs) != len(wantDocs) {
				t.Fatalf("got %d documents, want %d", len(gotDocs), len(wantDocs))
			}
			for i := range gotDocs {
				if gotDocs[i].name != wantDocs[i].name || !bytes.Equal(gotDocs[i].data, wantDocs[i].data) {
					t.Errorf("%s:\n%s\nwant %s:\n%s", gotDocs[i].name, gotDocs[i].data, wantDocs[i].name, wantDocs[i].data)
				}
			}
		})
	}
}

func TestSeedForCopiesInputs(t *testing.T) {
	v := &v1alpha1.VMInstance{ObjectMeta: v1alpha1.ObjectMeta{Name: "web"}}
	v.Spec.SSHKeys = []string{"ssh-ed25519 AAAA k1"}
	net := labNetwork()
	s := SeedFor(v, net)
	before := s.Hash()
	v.Spec.SSHKeys[0] = "changed"
	net.Ethernets["eth0"].Addresses[0] = netip.MustParsePrefix("10.0.0.1/8")
	net.Ethernets["eth1"] = Ethernet{DHCP4: true}
	if s.Hash() != before {
		t.Fatal("mutating the VMInstance or NetworkConfig after SeedFor changed the seed")
	}
}

func TestCloudInitSeedChangesInstanceID(t *testing.T) {
	ids := map[string]string{}
	for _, seed := range []string{"", "1", "2", "2024-06-01"} {
		v := &v1alpha1.VMInstance{ObjectMeta: v1alpha1.ObjectMeta{Namespace: "t", Name: "web"}}
		v.Spec.CloudInitSeed = seed
		s := SeedFor(v, nil)
		if prev, dup := ids[s.InstanceID]; dup {
			t.Fatalf("seeds %q and %q give the same instance-id %s", prev, seed, s.InstanceID)
		}
		ids[s.InstanceID] = seed
		md, err := s.MetaData()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(md, []byte(`"instance-id":"`+s.InstanceID+`"`)) {
			t.Errorf("meta-data %s does not carry instance-id %s", md, s.InstanceID)
		}
	}
}

func TestNeeded(t *testing.T) {
	tests := []struct {
		name string
		seed Seed
		want bool
	}{
		{name: "nothing to give the guest", seed: Seed{InstanceID: "x", Hostname: "h"}, want: false},
		{name: "ssh keys only", seed: Seed{PublicKeys: []string{"k"}}, want: true},
		{name: "cloudInit only", seed: Seed{UserData: "#cloud-config\n"}, want: true},
		{name: "network only", seed: Seed{Network: labNetwork()}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.seed.Needed(); got != tt.want {
				t.Errorf("Needed() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSanitizeHostname(t *testing.T) {
	long := "vm-instance-" + strings.Repeat("a", 60)
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "vm-instance-web", want: "vm-instance-web"},
		{name: "dot cuts", in: "vm-instance-web.example", want: "vm-instance-web"},
		{name: "63 characters at most", in: long, want: long[:63]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitizeHostname(tt.in); got != tt.want {
				t.Errorf("sanitizeHostname(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// goldenSeeds are the representative seeds whose three documents are kept
// under testdata/golden/<name>/ (regenerate with go test -update).
func goldenSeeds() []struct {
	name string
	seed Seed
} {
	return []struct {
		name string
		seed Seed
	}{
		{name: "keys-only", seed: Seed{
			InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web", InstanceType: "u1.medium",
			PublicKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx user@laptop", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC ops"},
		}},
		{name: "cloudinit-verbatim", seed: Seed{
			InstanceID: "14548f23-9b7d-432e-94d2-766bcac61428", Hostname: "vm-instance-db", InstanceType: "u1.large",
			PublicKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx user@laptop"},
			UserData:   "#cloud-config\nusers:\n  - name: admin\n    sudo: ALL=(ALL) NOPASSWD:ALL\nruncmd:\n  - [touch, /tmp/done]",
		}},
		{name: "custom-no-keys", seed: Seed{
			InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web",
			UserData: "#!/bin/sh\necho hello\n",
		}},
		{name: "static-network", seed: Seed{
			InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web", InstanceType: "u1.medium",
			PublicKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx user@laptop"},
			Network:    labNetwork(),
		}},
		{name: "dhcp-two-nics", seed: Seed{
			InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web", InstanceType: "u1.medium",
			Network: &NetworkConfig{Ethernets: map[string]Ethernet{
				"eth1": {Match: &Match{MACAddress: "52:54:00:AB:CD:EF"}, SetName: "eth1", DHCP4: true, MTU: 1450},
				"eth0": {DHCP4: true, DHCP6: true, Nameservers: &Nameservers{Search: []string{"tenant-a.svc"}}},
			}},
		}},
	}
}

func TestGoldenDocuments(t *testing.T) {
	for _, tt := range goldenSeeds() {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := tt.seed.documents()
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "golden", tt.name)
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for _, d := range docs {
					if err := os.WriteFile(filepath.Join(dir, d.name), d.data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatalf("reading golden files (run go test -update to create them): %v", err)
			}
			if len(entries) != len(docs) {
				t.Errorf("golden dir has %d files, seed renders %d documents", len(entries), len(docs))
			}
			for _, d := range docs {
				want, err := os.ReadFile(filepath.Join(dir, d.name))
				if err != nil {
					t.Fatalf("reading golden %s: %v", d.name, err)
				}
				if !bytes.Equal(d.data, want) {
					t.Errorf("%s differs from golden\n got: %q\nwant: %q", d.name, d.data, want)
				}
			}
		})
	}
}

// TestMetaDataIsKubeVirts pins the exact bytes of KubeVirt's encoding: JSON,
// KubeVirt's field order, no trailing newline, empty fields omitted.
func TestMetaDataIsKubeVirts(t *testing.T) {
	tests := []struct {
		name string
		seed Seed
		want string
	}{
		{
			name: "everything",
			seed: Seed{InstanceID: "id-1", Hostname: "vm-instance-a", InstanceType: "u1.small", PublicKeys: []string{"k0", "k1"}},
			want: `{"instance-type":"u1.small","instance-id":"id-1","local-hostname":"vm-instance-a","public-keys":{"0":"k0","1":"k1"}}`,
		},
		{
			name: "custom sizing, no keys",
			seed: Seed{InstanceID: "id-1", Hostname: "vm-instance-a"},
			want: `{"instance-id":"id-1","local-hostname":"vm-instance-a"}`,
		},
		{
			name: "only empty keys",
			seed: Seed{InstanceID: "id-1", Hostname: "vm-instance-a", PublicKeys: []string{""}},
			want: `{"instance-id":"id-1","local-hostname":"vm-instance-a"}`,
		},
		{
			name: "characters YAML forbids are escaped, others kept",
			seed: Seed{InstanceID: "id-1", PublicKeys: []string{"a\x7fb\u0085c\u00e9\ufeff<"}},
			want: `{"instance-id":"id-1","public-keys":{"0":"a\u007fb\u0085c` + "\u00e9" + `\ufeff\u003c"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.seed.MetaData()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("MetaData() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestPublicKeyNumbering follows KubeVirt reading Cozystack's key<i> Secret
// files in name order: key10 sorts before key2, and empty keys are skipped
// without leaving a gap.
func TestPublicKeyNumbering(t *testing.T) {
	tests := []struct {
		name string
		keys []string
		want map[string]string
	}{
		{name: "none", keys: nil, want: nil},
		{name: "in order below ten", keys: []string{"a", "b", "c"}, want: map[string]string{"0": "a", "1": "b", "2": "c"}},
		{name: "empty skipped", keys: []string{"a", "", "c"}, want: map[string]string{"0": "a", "1": "c"}},
		{
			name: "eleven keys in file-name order",
			keys: []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10"},
			// key0 key1 key10 key2 ... key9
			want: map[string]string{"0": "k0", "1": "k1", "2": "k10", "3": "k2", "4": "k3", "5": "k4", "6": "k5", "7": "k6", "8": "k7", "9": "k8", "10": "k9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := publicKeyMap(tt.keys)
			if len(got) != len(tt.want) {
				t.Fatalf("publicKeyMap = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("public-keys[%s] = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestUserDataBytes(t *testing.T) {
	tests := []struct {
		name string
		seed Seed
		want string
	}{
		{
			name: "cloudInit verbatim, keys not added",
			seed: Seed{UserData: "#cloud-config\nhostname: x", PublicKeys: []string{"k"}},
			want: "#cloud-config\nhostname: x",
		},
		{
			name: "generated from keys as Cozystack's secret.yaml renders it",
			seed: Seed{PublicKeys: []string{"ssh-ed25519 AAAA a@b", "ssh-rsa BBBB c@d"}},
			want: "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAA a@b\"\n  - \"ssh-rsa BBBB c@d\"\n",
		},
		{
			name: "quotes and backslashes escaped",
			seed: Seed{PublicKeys: []string{`ssh-ed25519 AAAA "quoted\path"`}},
			want: "#cloud-config\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAA \\\"quoted\\\\path\\\"\"\n",
		},
		{name: "nothing to say", seed: Seed{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.seed.UserDataBytes()); got != tt.want {
				t.Errorf("UserDataBytes() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestGeneratedUserDataParses checks that awkward keys survive YAML.
func TestGeneratedUserDataParses(t *testing.T) {
	tests := []struct {
		name string
		keys []string
	}{
		{name: "colons and hashes", keys: []string{"ssh-ed25519 AAAA: #not-a-comment", "key: value"}},
		{name: "quotes and backslashes", keys: []string{`a"b`, `c\d`, `\"`, `'single'`}},
		{name: "yaml look-alikes", keys: []string{"yes", "null", "~", "1:20", "0x1F", "- item", "{a: b}", "[x]", "&anchor", "*alias", "!tag", "%dir", "@at", "`tick`"}},
		{name: "control characters and newlines", keys: []string{"a\nb", "tab\there", "nul\x00", "bell\a", "del\x7f", "esc\x1b", "crlf\r\n"}},
		{name: "unicode", keys: []string{"clé ✓", "\u2028line", "\ufeffbom", "emoji 🔑", "nel\u0085"}},
		{name: "empty and spaces", keys: []string{"", " ", "  leading", "trailing  "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ud := Seed{PublicKeys: tt.keys}.UserDataBytes()
			if !bytes.HasPrefix(ud, []byte("#cloud-config\n")) {
				t.Fatalf("user-data does not start with #cloud-config: %q", ud)
			}
			var doc struct {
				Keys []string `json:"ssh_authorized_keys"`
			}
			if err := yaml.UnmarshalStrict(ud, &doc); err != nil {
				t.Fatalf("user-data is not valid YAML: %v\n%s", err, ud)
			}
			if strings.Join(doc.Keys, "\x00|") != strings.Join(tt.keys, "\x00|") {
				t.Errorf("keys round-trip to %q, want %q", doc.Keys, tt.keys)
			}
		})
	}
}

// TestHashTracksContent: two seeds hash alike exactly when their documents
// are alike.
func TestHashTracksContent(t *testing.T) {
	base := goldenSeeds()[3].seed // static-network: every document present
	variants := []struct {
		name string
		mut  func(*Seed)
	}{
		{name: "unchanged", mut: func(*Seed) {}},
		{name: "new instance-id", mut: func(s *Seed) { s.InstanceID = "other" }},
		{name: "new hostname", mut: func(s *Seed) { s.Hostname = "vm-instance-other" }},
		{name: "instance type", mut: func(s *Seed) { s.InstanceType = "u1.large" }},
		{name: "custom sizing", mut: func(s *Seed) { s.InstanceType = "" }},
		{name: "key added", mut: func(s *Seed) { s.PublicKeys = append(s.PublicKeys, "k2") }},
		{name: "empty key added (user-data changes)", mut: func(s *Seed) { s.PublicKeys = append(s.PublicKeys, "") }},
		{name: "cloudInit set", mut: func(s *Seed) { s.UserData = "#cloud-config\n" }},
		{name: "network dropped", mut: func(s *Seed) { s.Network = nil }},
		{name: "address changed", mut: func(s *Seed) {
			e := s.Network.Ethernets["eth0"]
			e.Addresses = []netip.Prefix{netip.MustParsePrefix("10.77.0.11/24")}
			s.Network.Ethernets["eth0"] = e
		}},
		{name: "MAC in upper case renders the same", mut: func(s *Seed) {
			e := s.Network.Ethernets["eth0"]
			e.Match = &Match{MACAddress: strings.ToUpper(e.Match.MACAddress)}
			s.Network.Ethernets["eth0"] = e
		}},
		{name: "empty search list renders the same", mut: func(s *Seed) {
			s.Network.Ethernets["eth0"].Nameservers.Search = []string{}
		}},
	}
	type rendered struct {
		name, hash, docs string
	}
	var all []rendered
	for _, v := range variants {
		s := base
		s.PublicKeys = append([]string(nil), base.PublicKeys...)
		s.Network = base.Network.Clone()
		v.mut(&s)
		docs, err := s.documents()
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		var flat strings.Builder
		for _, d := range docs {
			flat.WriteString(d.name + "=" + strconv.Quote(string(d.data)) + ";")
		}
		all = append(all, rendered{v.name, s.Hash(), flat.String()})
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			sameDocs := all[i].docs == all[j].docs
			sameHash := all[i].hash == all[j].hash
			if sameDocs != sameHash {
				t.Errorf("%q vs %q: documents equal = %v but hashes equal = %v", all[i].name, all[j].name, sameDocs, sameHash)
			}
		}
	}
	// And the variants meant to change something did.
	for _, r := range all[1:] {
		changed := r.docs != all[0].docs
		if want := !strings.Contains(r.name, "renders the same"); changed != want {
			t.Errorf("%q: content changed = %v, want %v", r.name, changed, want)
		}
	}
}

func TestHashSeparatesDocuments(t *testing.T) {
	// Bytes moved from user-data into meta-data must not collide.
	a := Seed{InstanceID: "x", UserData: "ab"}
	b := Seed{InstanceID: "x", UserData: "a"}
	if a.Hash() == b.Hash() {
		t.Fatal("different user-data, same hash")
	}
	if got := len(a.Hash()); got != 64 {
		t.Errorf("hash length %d, want 64 hex digits", got)
	}
	if again := (Seed{InstanceID: "x", UserData: "ab"}).Hash(); again != a.Hash() {
		t.Error("hash is not deterministic")
	}
}
