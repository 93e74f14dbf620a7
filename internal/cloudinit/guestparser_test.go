package cloudinit

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// pyLoad parses each file with PyYAML's safe_load, the loader cloud-init
// uses for meta-data, user-data (#cloud-config) and network-config, and
// returns the results as JSON values.
const pyLoad = `
import json, sys, yaml
out = {}
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        out[p.rsplit("/", 1)[-1]] = yaml.safe_load(f.read().decode("utf-8"))
print(json.dumps(out))
`

// TestGuestParserAgrees reads the documents the way the guest does.
// sigs.k8s.io/yaml is a YAML 1.2-leaning parser; cloud-init's PyYAML is
// YAML 1.1 (base-60 integers, NEL line breaks, yes/no booleans), so the
// quoting decisions are checked against the real thing. Skipped when
// python3 with the yaml module is not installed.
func TestGuestParserAgrees(t *testing.T) {
	if err := exec.Command("python3", "-c", "import yaml").Run(); err != nil {
		t.Skip("python3 with PyYAML (cloud-init's parser) is not installed")
	}
	awkward := []string{
		"ssh-ed25519 AAAAC3Nza user@laptop", `a"b\c`, "key: value # not a comment", "yes", "1:20:30",
		"tab\tnul\x00del\x7f", "nel\u0085ls\u2028bom\ufeff", "clé 🔑", "",
	}
	s := Seed{
		InstanceID: "78376756-139d-4e91-98ce-88e941b455c4", Hostname: "vm-instance-web", InstanceType: "u1.medium",
		PublicKeys: awkward, Network: labNetwork(),
	}
	dir := t.TempDir()
	docs, err := s.documents()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-c", pyLoad}
	for _, d := range docs {
		p := filepath.Join(dir, d.name)
		if err := os.WriteFile(p, d.data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command("python3", args...).Output()
	if err != nil {
		t.Fatalf("PyYAML rejected a document: %v", err)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}

	md := got[MetaDataFile]
	if md["instance-id"] != s.InstanceID || md["local-hostname"] != s.Hostname || md["instance-type"] != s.InstanceType {
		t.Errorf("meta-data identity read as %v", md)
	}
	keys, _ := md["public-keys"].(map[string]any)
	wantMeta := publicKeyMap(awkward)
	if len(keys) != len(wantMeta) {
		t.Errorf("meta-data public-keys read as %q, want %q", keys, wantMeta)
	}
	for k, v := range wantMeta {
		if keys[k] != v {
			t.Errorf("meta-data public-keys[%s] read as %q, want %q", k, keys[k], v)
		}
	}

	ud, _ := got[UserDataFile]["ssh_authorized_keys"].([]any)
	if len(ud) != len(awkward) {
		t.Fatalf("user-data ssh_authorized_keys read as %q", ud)
	}
	for i, k := range awkward {
		if ud[i] != k {
			t.Errorf("user-data key %d read as %q, want %q", i, ud[i], k)
		}
	}

	nc := got[NetworkConfigFile]
	eth0, _ := nc["ethernets"].(map[string]any)["eth0"].(map[string]any)
	match, _ := eth0["match"].(map[string]any)
	if nc["version"] != float64(2) || match["macaddress"] != "52:54:00:12:34:56" || eth0["accept-ra"] != false {
		t.Errorf("network-config read as %v", nc)
	}
}
