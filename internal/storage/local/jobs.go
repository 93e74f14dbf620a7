package local

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmdhq/vmd/internal/storage"
)

// jobKind tells what a background job does; uploads are reported
// differently when they fail.
type jobKind int

const (
	jobImport jobKind = iota
	jobClone
	jobUpload
)

// job is one long operation on one disk: a download and import, a clone or
// an upload. Its progress is read by EnsureVolume while it runs; its
// outcome is handed to the next EnsureVolume after it ends.
type job struct {
	kind   jobKind
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	stage string
	// retry says why a download is paused; cleared when bytes move again.
	retry   string
	bytes   int64 // source bytes received so far, including a resumed prefix
	total   int64 // source bytes expected, -1 unknown
	started time.Time
	// base is the first byte count observed, so a resumed download's rate
	// counts only bytes moved by this process.
	base     int64
	baseSeen bool
	// set once done is closed
	err    error
	sha256 string
}

func newJob(kind jobKind, cancel context.CancelFunc) *job {
	return &job{kind: kind, cancel: cancel, done: make(chan struct{}), total: -1, started: time.Now()}
}

// progress records source bytes; it is an images.ProgressFunc.
func (j *job) progress(done, total int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.baseSeen {
		j.base, j.baseSeen, j.started = done, true, time.Now()
	}
	if done > j.bytes {
		j.retry = ""
	}
	j.bytes, j.total = done, total
}

// retrying records why the download is paused; it is a
// images.FetchRequest.Retrying callback.
func (j *job) retrying(err error, wait time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.retry = fmt.Sprintf("download interrupted, retrying in %s: %v", wait.Round(time.Second), err)
}

func (j *job) setStage(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stage = s
}

// convertProgress reports a conversion's percentage as the stage.
func (j *job) convertProgress(pct float64) {
	j.setStage(fmt.Sprintf("converting %.0f%%", pct))
}

// volume reports the running job.
func (j *job) volume(v storage.Volume, path string) storage.Volume {
	j.mu.Lock()
	defer j.mu.Unlock()
	v.Path = path
	v.Stage = j.stage
	if j.retry != "" {
		v.Stage += " (" + j.retry + ")"
	}
	v.BytesDone = j.bytes
	v.BytesTotal = max(j.total, 0)
	if el := time.Since(j.started).Seconds(); j.baseSeen && el >= 0.5 {
		v.BytesPerSecond = int64(float64(j.bytes-j.base) / el)
	}
	return v
}

func (j *job) finished() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// startJob runs fn in the background for req unless a job for the disk
// exists, and reports the job as a not-yet-ready volume.
func (p *Pools) startJob(req storage.VolumeRequest, kind jobKind, v storage.Volume, path string, fn func(context.Context, *job) error) storage.Volume {
	p.mu.Lock()
	j, ok := p.jobs[req.UID]
	if !ok {
		var ctx context.Context
		ctx, cancel := context.WithCancel(p.ctx)
		j = newJob(kind, cancel)
		j.stage = "starting"
		p.jobs[req.UID] = j
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer cancel()
			log := p.log.With("disk", req.Namespace+"/"+req.Name, "uid", req.UID)
			start := time.Now()
			err := fn(ctx, j)
			if err != nil {
				log.Warn("volume import failed", "err", err, "duration", time.Since(start))
			} else {
				log.Info("volume imported", "path", path, "duration", time.Since(start))
			}
			j.mu.Lock()
			j.err = err
			j.mu.Unlock()
			close(j.done)
		}()
	}
	p.mu.Unlock()
	return j.volume(v, path)
}

// registerJob adds a job run by the caller (an upload) or reports that one
// exists.
func (p *Pools) registerJob(uid string, j *job) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.jobs[uid]; ok && !old.finished() {
		return false
	}
	p.jobs[uid] = j
	return true
}

// finishJob records the outcome of a caller-run job.
func (p *Pools) finishJob(j *job, err error) {
	j.mu.Lock()
	j.err = err
	j.mu.Unlock()
	close(j.done)
}

// jobOutcome returns the disk's job. A finished job is removed: its outcome
// is handed out exactly once.
func (p *Pools) jobOutcome(uid string) (j *job, running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, ok := p.jobs[uid]
	if !ok {
		return nil, false
	}
	if !j.finished() {
		return j, true
	}
	delete(p.jobs, uid)
	return j, false
}

// stopJob cancels the disk's job and waits for it to end, so it cannot
// create a file after the volume was deleted.
func (p *Pools) stopJob(ctx context.Context, uid string) error {
	p.mu.Lock()
	j, ok := p.jobs[uid]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	j.cancel()
	select {
	case <-j.done:
	case <-ctx.Done():
		// The job stays registered: a retry of the deletion waits again.
		return fmt.Errorf("waiting for the import to stop: %w", ctx.Err())
	}
	p.mu.Lock()
	if p.jobs[uid] == j {
		delete(p.jobs, uid)
	}
	p.mu.Unlock()
	return nil
}
