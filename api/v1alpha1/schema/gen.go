//go:build ignore

// gen writes vminstance.json and vmdisk.json: JSON Schemas (draft 2020-12)
// of the wire types, with descriptions taken from the Go doc comments, for
// editors (yaml-language-server) and other tooling. The schema is derived,
// never edited by hand: `go generate ./api/...` rewrites it and
// TestSchemaUpToDate fails when the committed copy is stale.
//
// Run from this directory: go run gen.go
package main

import (
	"fmt"
	"os"

	"github.com/vmdhq/vmd/api/v1alpha1/schema"
)

func main() {
	out, err := schema.Generate("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "genschema:", err)
		os.Exit(1)
	}
	for name, s := range out {
		b, err := schema.Marshal(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "genschema:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(name, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "genschema:", err)
			os.Exit(1)
		}
	}
}
