package schema

import (
	"bytes"
	"os"
	"testing"
)

// TestSchemaUpToDate fails when the committed schema files differ from
// what the Go types generate: run `go generate ./api/...` and commit.
func TestSchemaUpToDate(t *testing.T) {
	out, err := Generate("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("generated %d schemas, want 2", len(out))
	}
	for name, s := range out {
		want, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v (run go generate ./api/...)", name, err)
		}
		if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
			t.Errorf("%s is stale: run `go generate ./api/...` and commit the result", name)
		}
	}
}

func TestSchemaContent(t *testing.T) {
	out, err := Generate("..")
	if err != nil {
		t.Fatal(err)
	}
	spec := out["vminstance.json"]["properties"].(Schema)["spec"].(Schema)
	props := spec["properties"].(Schema)
	it := props["instanceType"].(Schema)
	if it["default"] != "u1.medium" || it["description"] == "" {
		t.Fatalf("instanceType schema lacks default or description: %v", it)
	}
	if spec["additionalProperties"] != false {
		t.Fatal("spec must refuse unknown fields, as vmd does")
	}
	disks := props["disks"].(Schema)["items"].(Schema)
	if len(disks["anyOf"].([]Schema)) != 2 {
		t.Fatalf("disks items must accept a string or an object: %v", disks)
	}
	dspec := out["vmdisk.json"]["properties"].(Schema)["spec"].(Schema)["properties"].(Schema)
	if dspec["storage"].(Schema)["default"] != "5Gi" || dspec["storageClass"].(Schema)["default"] != "replicated" {
		t.Fatalf("vmdisk defaults: %v", dspec)
	}
}
