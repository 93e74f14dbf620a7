// Package version carries build information stamped in by the linker
// (see the Makefile's LDFLAGS), shared by vmd and vmctl.
package version

import "runtime"

// Set with -ldflags "-X github.com/vmdhq/vmd/internal/version.Version=...".
var (
	Version   = "dev"
	GitCommit = "unknown"
	BuildDate = "unknown"
)

// Info is the build information as served on /version.
type Info struct {
	Version   string `json:"version"`
	GitCommit string `json:"gitCommit"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// Get returns this binary's build information.
func Get() Info {
	return Info{Version: Version, GitCommit: GitCommit, BuildDate: BuildDate, GoVersion: runtime.Version()}
}
