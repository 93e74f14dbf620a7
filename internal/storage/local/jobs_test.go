package local

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmdhq/vmd/internal/storage"
)

// A paused download says why in the volume's stage, and the note goes
// away as soon as bytes move again.
func TestJobRetryNote(t *testing.T) {
	j := newJob(jobImport, func() {})
	j.setStage("downloading")
	j.progress(100, 1000)
	j.retrying(errors.New("dial tcp: lookup cloud.debian.org: no such host"), 4*time.Second)
	v := j.volume(storage.Volume{}, "/p")
	if !strings.Contains(v.Stage, "downloading (download interrupted, retrying in 4s: dial tcp: lookup cloud.debian.org: no such host)") {
		t.Fatalf("stage while paused = %q", v.Stage)
	}
	j.progress(100, 1000) // a progress call without new bytes keeps the note
	if v := j.volume(storage.Volume{}, "/p"); !strings.Contains(v.Stage, "retrying") {
		t.Fatalf("note dropped before bytes moved: %q", v.Stage)
	}
	j.progress(200, 1000)
	if v := j.volume(storage.Volume{}, "/p"); v.Stage != "downloading" {
		t.Fatalf("stage after resuming = %q, want %q", v.Stage, "downloading")
	}
}
