package images

import (
	"crypto/sha256"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// This file holds the on-disk side of a download: the .part file, its
// sidecar, and the rules that keep the two consistent across crashes.

// partPath is where the bytes of the download keyed key accumulate.
func (f *Fetcher) partPath(key string) string {
	return filepath.Join(f.cfg.ScratchDir, key+".part")
}

// sidecarPath is the .part's state file.
func (f *Fetcher) sidecarPath(key string) string { return f.partPath(key) + ".json" }

// removePart deletes the sidecar first, so that a crash in between leaves
// a .part without a sidecar, which is discarded, never a sidecar that
// describes bytes that are gone.
func (f *Fetcher) removePart(fl *flight) {
	for _, p := range []string{f.sidecarPath(fl.key), f.partPath(fl.key)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			fl.log.Warn("removing partial download", "path", p, "error", err)
		}
	}
}

// Sweep removes what a previous process left that nothing can use: files
// being written (*.tmp), results whose callers died (*.img), and partial
// downloads untouched for longer than partMaxAge (0 keeps them all). Call
// it at start-up before the first Fetch.
func (f *Fetcher) Sweep(partMaxAge time.Duration) error {
	entries, err := os.ReadDir(f.cfg.ScratchDir)
	if err != nil {
		return fmt.Errorf("sweeping scratch: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		remove := strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".img")
		if !remove && partMaxAge > 0 && (strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".part.json")) {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > partMaxAge {
				remove = true
			}
		}
		if remove {
			if err := os.Remove(filepath.Join(f.cfg.ScratchDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweeping scratch: %w", err)
	}
	return nil
}

// sidecar is the persistent state of a partial download. Invariant: the
// first Written bytes of the .part are on disk (fsynced before the sidecar
// was written) and HashState is sha256's state after exactly those bytes,
// so resuming costs neither a re-download nor a re-read of the prefix.
type sidecar struct {
	Version      int    `json:"version"`
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
	Written      int64  `json:"written"`
	// Total is the size announced by the server, -1 if unknown.
	Total    int64 `json:"total"`
	Complete bool  `json:"complete,omitempty"`
	// HashState is the crypto/sha256 digest's MarshalBinary output.
	HashState []byte `json:"hashState"`
}

const sidecarVersion = 1

// partState is an open partial download.
type partState struct {
	sidecar
	file       *os.File
	hash       hash.Hash
	checkpoint int64 // Written at the last checkpoint
}

// validator is the value for If-Range: a strong ETag, else Last-Modified.
// A weak ETag cannot be used (RFC 9110 §13.1.5) and no validator at all
// means the bytes we hold cannot be proven to belong to today's file.
func (s *partState) validator() string {
	if s.ETag != "" && !strings.HasPrefix(s.ETag, "W/") {
		return s.ETag
	}
	return s.LastModified
}

// downloaded is a finished .part.
type downloaded struct {
	sha256      string
	size        int64
	transferred int64
}

// openPart opens or creates the .part of fl and adopts its sidecar when
// the sidecar is consistent; otherwise it starts from zero.
func (f *Fetcher) openPart(fl *flight) (*partState, error) {
	file, err := os.OpenFile(f.partPath(fl.key), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening partial download: %w", err)
	}
	st := &partState{file: file, hash: sha256.New()}
	st.URL, st.Version, st.Total = fl.url, sidecarVersion, -1
	if sc, reason := f.loadSidecar(fl, file); reason == "" {
		st.sidecar = sc
		st.checkpoint = sc.Written
		fl.log.Info("resuming partial download", "bytes", sc.Written, "complete", sc.Complete)
	} else if reason != "no sidecar" {
		fl.log.Info("discarding partial download", "reason", reason)
	}
	if st.Written == 0 {
		if err := f.reset(fl, st); err != nil {
			file.Close()
			return nil, err
		}
		return st, nil
	}
	// Bytes past the checkpoint may not have reached the disk intact:
	// drop them rather than trust them.
	if err := file.Truncate(st.Written); err != nil {
		file.Close()
		return nil, fmt.Errorf("truncating partial download: %w", err)
	}
	if _, err := file.Seek(st.Written, io.SeekStart); err != nil {
		file.Close()
		return nil, fmt.Errorf("seeking partial download: %w", err)
	}
	return st, nil
}

// loadSidecar returns the sidecar if it is usable, else why not.
func (f *Fetcher) loadSidecar(fl *flight, file *os.File) (sidecar, string) {
	var sc sidecar
	b, err := os.ReadFile(f.sidecarPath(fl.key))
	if errors.Is(err, os.ErrNotExist) {
		return sc, "no sidecar"
	}
	if err != nil {
		return sc, err.Error()
	}
	if err := json.Unmarshal(b, &sc); err != nil {
		return sc, "sidecar unreadable: " + err.Error()
	}
	fi, err := file.Stat()
	switch {
	case err != nil:
		return sc, err.Error()
	case sc.Version != sidecarVersion:
		return sc, "sidecar version " + strconv.Itoa(sc.Version)
	case sc.URL != fl.url:
		return sc, "sidecar is for another URL"
	case sc.Written < 0 || fi.Size() < sc.Written:
		return sc, "partial file shorter than its sidecar"
	case sc.Complete && sc.Total != sc.Written:
		return sc, "sidecar inconsistent"
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(sc.HashState); err != nil {
		return sc, "hash state unreadable: " + err.Error()
	}
	return sc, ""
}

// reset empties the partial download. The sidecar goes first, durably,
// so no crash can pair an old sidecar with new bytes.
func (f *Fetcher) reset(fl *flight, st *partState) error {
	if err := os.Remove(f.sidecarPath(fl.key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("resetting partial download: %w", err)
	}
	if err := syncDir(f.cfg.ScratchDir); err != nil {
		return err
	}
	if err := st.file.Truncate(0); err != nil {
		return fmt.Errorf("resetting partial download: %w", err)
	}
	if _, err := st.file.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("resetting partial download: %w", err)
	}
	st.hash = sha256.New()
	st.sidecar = sidecar{Version: sidecarVersion, URL: fl.url, Total: -1}
	st.checkpoint = 0
	return nil
}

// restoreHash sets st.hash from the adopted sidecar.
func (s *partState) restoreHash() error {
	if s.Written == 0 {
		return nil
	}
	return s.hash.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.HashState)
}

// save fsyncs the data, then atomically replaces the sidecar.
func (f *Fetcher) save(fl *flight, st *partState) error {
	if err := st.file.Sync(); err != nil {
		return fmt.Errorf("syncing partial download: %w", err)
	}
	state, err := st.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("saving hash state: %w", err)
	}
	st.HashState = state
	b, err := json.Marshal(st.sidecar)
	if err != nil {
		return fmt.Errorf("encoding sidecar: %w", err)
	}
	if err := writeFileAtomic(f.sidecarPath(fl.key), b); err != nil {
		return fmt.Errorf("saving sidecar: %w", err)
	}
	st.checkpoint = st.Written
	return nil
}

// writeFileAtomic writes data to a temporary file, fsyncs it and renames
// it over path.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
