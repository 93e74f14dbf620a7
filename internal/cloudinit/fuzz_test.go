package cloudinit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// asJSONString is what a string becomes after a trip through JSON: invalid
// UTF-8 bytes turn into U+FFFD, as Go's encoder (and KubeVirt's) does.
func asJSONString(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzMetaData: whatever the identity strings and keys, meta-data parses as
// YAML and gives back the same values (KubeVirt's field names, the keys
// numbered without the empty ones).
func FuzzMetaData(f *testing.F) {
	f.Add("78376756-139d-4e91-98ce-88e941b455c4", "vm-instance-web", "u1.medium", "ssh-ed25519 AAAA a@b", "")
	f.Add("", "", "", "", "")
	f.Add("id: 1", "host#name", "yes", "k\"ey\\", "line\nbreak")
	f.Add("\x7f", "\u0085", "\ufeff", "\xff\xfe", "\u2028")
	f.Fuzz(func(t *testing.T, id, host, itype, key0, key1 string) {
		s := Seed{InstanceID: id, Hostname: host, InstanceType: itype, PublicKeys: []string{key0, key1}}
		md, err := s.MetaData()
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			InstanceType  *string           `json:"instance-type"`
			InstanceID    *string           `json:"instance-id"`
			LocalHostname *string           `json:"local-hostname"`
			PublicKeys    map[string]string `json:"public-keys"`
		}
		if err := yaml.UnmarshalStrict(md, &got); err != nil {
			t.Fatalf("meta-data is not YAML: %v\n%q", err, md)
		}
		if got.InstanceID == nil || *got.InstanceID != asJSONString(t, id) {
			t.Errorf("instance-id = %v, want %q", got.InstanceID, id)
		}
		for _, c := range []struct {
			field string
			got   *string
			want  string
		}{{"instance-type", got.InstanceType, itype}, {"local-hostname", got.LocalHostname, host}} {
			switch {
			case c.want == "" && c.got != nil:
				t.Errorf("%s present for an empty value", c.field)
			case c.want != "" && (c.got == nil || *c.got != asJSONString(t, c.want)):
				t.Errorf("%s = %v, want %q", c.field, c.got, c.want)
			}
		}
		var wantKeys []string
		for _, k := range []string{key0, key1} {
			if k != "" {
				wantKeys = append(wantKeys, asJSONString(t, k))
			}
		}
		if len(got.PublicKeys) != len(wantKeys) {
			t.Fatalf("public-keys = %q, want %q", got.PublicKeys, wantKeys)
		}
		for i, k := range wantKeys {
			if got.PublicKeys[string(rune('0'+i))] != k {
				t.Errorf("public-keys[%d] = %q, want %q", i, got.PublicKeys[string(rune('0'+i))], k)
			}
		}
	})
}

// FuzzUserData: generated user-data is always a #cloud-config whose
// ssh_authorized_keys is the key list (for keys that are valid UTF-8; YAML
// cannot carry other bytes), and a given cloudInit is passed unchanged.
func FuzzUserData(f *testing.F) {
	f.Add("ssh-ed25519 AAAA a@b", "ssh-rsa BBBB", "")
	f.Add(`"quoted"`, `back\slash`, "#cloud-config\nruncmd: [ls]\n")
	f.Add("key: value # comment", "- list", "")
	f.Add("\x00\a\b\t\n\v\f\r\x1b\x7f", "\u0085\u2028\ufeff\U0001F511", "")
	f.Fuzz(func(t *testing.T, key0, key1, cloudInit string) {
		keys := []string{key0, key1}
		s := Seed{PublicKeys: keys, UserData: cloudInit}
		ud := s.UserDataBytes()
		if cloudInit != "" {
			if string(ud) != cloudInit {
				t.Fatalf("cloudInit not passed verbatim: %q", ud)
			}
			return
		}
		if !bytes.HasPrefix(ud, []byte("#cloud-config\nssh_authorized_keys:\n")) {
			t.Fatalf("unexpected header: %q", ud)
		}
		var doc map[string][]string
		if err := yaml.UnmarshalStrict(ud, &doc); err != nil {
			t.Fatalf("user-data is not YAML: %v\n%q", err, ud)
		}
		if len(doc) != 1 {
			t.Fatalf("user-data has keys %v, want only ssh_authorized_keys", doc)
		}
		got := doc["ssh_authorized_keys"]
		if len(got) != len(keys) {
			t.Fatalf("ssh_authorized_keys = %q, want %q", got, keys)
		}
		for i, k := range keys {
			if isValidUTF8(k) && got[i] != k {
				t.Errorf("ssh_authorized_keys[%d] = %q, want %q", i, got[i], k)
			}
		}
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// FuzzISORoundTrip: whatever the documents hold, the image reads back to
// exactly the documents, under the exact names, with the cidata label.
func FuzzISORoundTrip(f *testing.F) {
	f.Add("id", "vm-instance-a", "u1.small", "ssh-ed25519 AAAA", "", false)
	f.Add("", "", "", "", "#cloud-config\n", true)
	f.Add("x", "y", "", "", strings.Repeat("z", 2048), false)
	f.Add("x", "y", "", "", strings.Repeat("z", 2049), true)
	f.Fuzz(func(t *testing.T, id, host, itype, key, userData string, withNet bool) {
		if len(userData) > 64<<10 {
			t.Skip("seed documents are small")
		}
		s := Seed{InstanceID: id, Hostname: host, InstanceType: itype, PublicKeys: []string{key}, UserData: userData}
		if withNet {
			s.Network = labNetwork()
		}
		var buf bytes.Buffer
		if err := WriteISO(&buf, s); err != nil {
			t.Fatal(err)
		}
		files, label, err := ReadISO(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if label != VolumeLabel {
			t.Errorf("label = %q", label)
		}
		checkFiles(t, files, wantFiles(t, s))
	})
}

// FuzzReadISO: arbitrary bytes never crash ReadISO (vmctl reads files a
// user points it at).
func FuzzReadISO(f *testing.F) {
	var valid bytes.Buffer
	if err := WriteISO(&valid, goldenSeeds()[3].seed); err != nil {
		f.Fatal(err)
	}
	f.Add(valid.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		files, _, err := ReadISO(bytes.NewReader(data))
		if err == nil {
			for name, b := range files {
				if len(b) > MaxReadFileSize {
					t.Errorf("%s: %d bytes over the limit", name, len(b))
				}
			}
		}
	})
}
