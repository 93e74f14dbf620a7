// Package controller drives the host toward the stored desired state.
//
// Shape: a store watch (plus a resync at start and every ResyncPeriod)
// feeds keys into one Queue; a fixed pool of workers takes keys and calls
// the kind's Reconciler. A reconciler observes, plans and acts through ports
// (storage.Volumes, hypervisor.Driver), then writes status. Because every
// step is idempotent and the desired state is already durable, a crash at
// any point converges on the next pass.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/state"
)

// Key identifies one object to reconcile.
type Key struct {
	Kind      v1alpha1.Kind
	Namespace string
	Name      string
}

// String renders kind/namespace/name for logs.
func (k Key) String() string { return fmt.Sprintf("%s/%s/%s", k.Kind, k.Namespace, k.Name) }

// Result tells the controller when to look at a key again even if
// nothing changes (e.g. to poll an import's progress).
type Result struct {
	RequeueAfter time.Duration
}

// Reconciler makes the host match one object. It MUST be idempotent and
// safe to call at any time for any key, including keys that no longer
// exist. A returned error re-queues the key with back-off.
type Reconciler interface {
	Reconcile(ctx context.Context, key Key) (Result, error)
}

// MapFunc returns further keys to reconcile when obj changes (e.g. a disk
// change wakes the instances that attach it).
type MapFunc func(ctx context.Context, obj v1alpha1.Object) []Key

// Options configures a Controller.
type Options struct {
	// Workers is the number of keys reconciled in parallel.
	Workers int
	// ResyncPeriod re-queues every object periodically, catching host
	// drift that produced no event.
	ResyncPeriod time.Duration
	// BackoffBase and BackoffMax bound the per-key retry delay.
	BackoffBase, BackoffMax time.Duration
	Logger                  *slog.Logger
	Registerer              prometheus.Registerer
}

// Controller runs reconcilers for the kinds registered with Register.
type Controller struct {
	store       state.Store
	opts        Options
	queue       *Queue[Key]
	reconcilers map[v1alpha1.Kind]Reconciler
	mappers     map[v1alpha1.Kind][]MapFunc
	log         *slog.Logger

	reconcileTotal    *prometheus.CounterVec
	reconcileDuration *prometheus.HistogramVec
	queueDepth        prometheus.GaugeFunc
}

// New returns a controller reading from store.
func New(store state.Store, opts Options) *Controller {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.ResyncPeriod <= 0 {
		opts.ResyncPeriod = 10 * time.Minute
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 500 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Controller{
		store:       store,
		opts:        opts,
		queue:       NewQueue[Key](opts.BackoffBase, opts.BackoffMax),
		reconcilers: map[v1alpha1.Kind]Reconciler{},
		mappers:     map[v1alpha1.Kind][]MapFunc{},
		log:         opts.Logger,
		reconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmd_reconcile_total",
			Help: "Reconcile passes by kind and result (ok, requeue, error).",
		}, []string{"kind", "result"}),
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vmd_reconcile_duration_seconds",
			Help:    "Time spent in one reconcile pass.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"kind"}),
	}
	c.queueDepth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vmd_workqueue_depth",
		Help: "Keys ready for reconciliation.",
	}, func() float64 { return float64(c.queue.Len()) })
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(c.reconcileTotal, c.reconcileDuration, c.queueDepth)
	}
	return c
}

// Register sets the reconciler of a kind; maps are optional extra keys to
// enqueue when an object of that kind changes. Call before Run.
func (c *Controller) Register(kind v1alpha1.Kind, r Reconciler, maps ...MapFunc) {
	c.reconcilers[kind] = r
	c.mappers[kind] = append(c.mappers[kind], maps...)
}

// Enqueue asks for key to be reconciled soon.
func (c *Controller) Enqueue(key Key) { c.queue.Add(key) }

// Run blocks until ctx ends: it lists and watches every registered kind,
// resyncs periodically and runs the workers. In-flight reconciles finish
// before Run returns.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for kind := range c.reconcilers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchLoop(ctx, kind)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(c.opts.ResyncPeriod)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for kind := range c.reconcilers {
					if _, err := c.resync(ctx, kind); err != nil {
						c.log.Warn("resync failed", "kind", kind, "err", err)
					}
				}
			}
		}
	}()
	var workers sync.WaitGroup
	for i := 0; i < c.opts.Workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for c.processNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	workers.Wait()
	wg.Wait()
	return nil
}

// resync enqueues every object of kind and returns the list's
// resourceVersion, from which a watch misses nothing.
func (c *Controller) resync(ctx context.Context, kind v1alpha1.Kind) (string, error) {
	objs, rv, err := c.store.List(ctx, kind, "")
	if err != nil {
		return "", fmt.Errorf("listing %s: %w", kind.Plural(), err)
	}
	for _, o := range objs {
		m := o.GetObjectMeta()
		c.queue.Add(Key{Kind: kind, Namespace: m.Namespace, Name: m.Name})
	}
	return rv, nil
}

// watchLoop lists then watches kind until ctx ends, starting over from a
// fresh list whenever the watch ends (overflow, ErrGone, store restart).
func (c *Controller) watchLoop(ctx context.Context, kind v1alpha1.Kind) {
	delay := c.opts.BackoffBase
	for ctx.Err() == nil {
		rv, err := c.resync(ctx, kind)
		if err == nil {
			var ch <-chan state.Event
			ch, err = c.store.Watch(ctx, kind, "", rv)
			if err == nil {
				delay = c.opts.BackoffBase
				for ev := range ch {
					c.handleEvent(ctx, kind, ev)
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("watch failed; retrying", "kind", kind, "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, c.opts.BackoffMax)
	}
}

func (c *Controller) handleEvent(ctx context.Context, kind v1alpha1.Kind, ev state.Event) {
	if ev.Object == nil {
		return
	}
	m := ev.Object.GetObjectMeta()
	c.queue.Add(Key{Kind: kind, Namespace: m.Namespace, Name: m.Name})
	for _, f := range c.mappers[kind] {
		for _, k := range f(ctx, ev.Object) {
			c.queue.Add(k)
		}
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, ok := c.queue.Get()
	if !ok {
		return false
	}
	defer c.queue.Done(key)
	r := c.reconcilers[key.Kind]
	if r == nil {
		return true
	}
	start := time.Now()
	res, err := r.Reconcile(ctx, key)
	c.reconcileDuration.WithLabelValues(string(key.Kind)).Observe(time.Since(start).Seconds())
	switch {
	case err != nil && ctx.Err() != nil:
		// Shutting down: the key is reconciled again at next start.
	case err != nil:
		c.reconcileTotal.WithLabelValues(string(key.Kind), "error").Inc()
		delay := c.queue.NextBackoff(key)
		level := slog.LevelWarn
		if errors.Is(err, errdefs.ErrConflict) {
			// Someone wrote the object meanwhile; the watch brings it back.
			level = slog.LevelDebug
		}
		c.log.Log(ctx, level, "reconcile failed", "key", key.String(), "err", err, "retry_in", delay)
		c.queue.AddAfter(key, delay)
	case res.RequeueAfter > 0:
		c.reconcileTotal.WithLabelValues(string(key.Kind), "requeue").Inc()
		c.queue.Forget(key)
		c.queue.AddAfter(key, res.RequeueAfter)
	default:
		c.reconcileTotal.WithLabelValues(string(key.Kind), "ok").Inc()
		c.queue.Forget(key)
	}
	return true
}
