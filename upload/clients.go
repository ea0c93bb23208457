package upload

import (
	"context"
	"fmt"
	"sync"
)

// Clients are the store clients of one process (a run, a batch, a worker),
// one per store, shared by its jobs: one pacer per store (so that every
// sender of the process backs off together when the store pushes back),
// one pool of connections, one credential cache. Close them when the
// process is done with them.
type Clients struct {
	base Config
	mu   sync.Mutex
	m    map[string]*Client
}

// NewClients returns an empty set of clients; base gives what every client
// shares beyond its store's settings (a test's Backend, HTTPClient or
// Credentials, the retry budget).
func NewClients(base Config) *Clients {
	return &Clients{base: base, m: map[string]*Client{}}
}

// Get is the client of the store c names (its Endpoint, Region,
// JDCloudRegion, PathStyle and Profile), made on first use.
func (cs *Clients) Get(ctx context.Context, c Config) (*Client, error) {
	key := fmt.Sprintf("%q %q %q %v %q", c.Endpoint, c.Region, c.JDCloudRegion, c.PathStyle, c.Profile)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cl := cs.m[key]; cl != nil {
		return cl, nil
	}
	cfg := cs.base
	cfg.Endpoint, cfg.Region, cfg.JDCloudRegion, cfg.PathStyle, cfg.Profile = c.Endpoint, c.Region, c.JDCloudRegion, c.PathStyle, c.Profile
	if cfg.Conns == 0 {
		cfg.Conns = 64 // the parts in flight of every job of the process
	}
	cl, err := NewClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cs.m[key] = cl
	return cl, nil
}

// Close closes every client's idle connections.
func (cs *Clients) Close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, cl := range cs.m {
		cl.Close()
	}
}
