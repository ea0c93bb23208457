package vsphere

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"vmimport/reader/image"
	"vmimport/reader/remote"
)

// Files opens the files of one disk's chain on the datastores, through
// the datastore's file access of the vCenter (or host) the session is
// logged in to: https://HOST/folder/PATH?dcPath=DC&dsName=DS, with the
// session cookie. It is an image.Remote: the VMDK reader opens the top
// descriptor with it, and through it the extents and parents the
// descriptors name, resolved against the descriptor's URL (so in its own
// folder, or under an --allow-path URL prefix). Only files in the folders
// of the chain vCenter lists for the disk are opened: a descriptor cannot
// make the reader fetch another file of the datastore, nor anything from
// another host. Safe for concurrent use.
type Files struct {
	op     *remote.Opener
	origin *url.URL
	dcPath string
	// Top is the URL of the disk's top descriptor, to hand to the reader.
	Top string
	// dirs are the chain's folders: "ds\x00folder" of every descriptor.
	dirs map[string]bool
	// byID maps a datastore's UUID and name to its name, for
	// /vmfs/volumes/ID/... names.
	byID map[string]string
	// vmURL and disk name the source in the identity.
	vmURL string
	disk  int

	mu     sync.Mutex
	opened []string // fetch URLs, in order
}

var _ image.Remote = (*Files)(nil)

func newFiles(ctx context.Context, s *Source, o remote.Options) (*Files, error) {
	if len(s.chain) == 0 {
		return nil, fmt.Errorf("%s: disk %d (%s) names no file", s.VM.URL, s.Disk.Index, s.Disk.Label)
	}
	idle := o.IdleTimeout
	if idle <= 0 {
		idle = remote.DefaultIdleTimeout
	}
	o.HTTPClient = s.sess.HTTPClient(idle)
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	if c := s.sess.cookie(); c != "" {
		h.Set("Cookie", c)
	}
	o.Header = h
	f := &Files{
		op: remote.New(ctx, o), origin: s.sess.origin, dcPath: s.VM.datacenter,
		dirs: map[string]bool{}, byID: map[string]string{}, vmURL: s.VM.URL, disk: s.Disk.Index,
	}
	for _, ds := range s.VM.datastores {
		f.byID[ds.name] = ds.name
		if id := path.Base(strings.TrimSuffix(ds.url, "/")); id != "" && id != "." && id != "/" {
			f.byID[id] = ds.name
		}
	}
	for i, name := range s.chain {
		p, ok := ParseDatastorePath(name)
		if !ok {
			return nil, fmt.Errorf("%s: disk %d: %q is not a datastore path", s.VM.URL, s.Disk.Index, name)
		}
		f.byID[p.Datastore] = p.Datastore
		f.dirs[p.Datastore+"\x00"+path.Dir(p.Path)] = true
		if i == 0 {
			f.Top = f.URL(p)
		}
	}
	return f, nil
}

// URL is the file access URL of a datastore file.
func (f *Files) URL(p DatastorePath) string {
	u := url.URL{Scheme: f.origin.Scheme, Host: f.origin.Host, Path: "/folder/" + p.Path}
	u.RawQuery = url.Values{"dcPath": {f.dcPath}, "dsName": {p.Datastore}}.Encode()
	return u.String()
}

// OpenRemote opens a file of the chain: the top descriptor's URL, or a
// name a descriptor records, resolved against the URL of the descriptor
// (https://HOST/folder/DIR/NAME, without the query: the datastore is the
// one of the chain that has DIR; or https://HOST/vmfs/volumes/ID/DIR/NAME
// for an absolute ESXi path, when --allow-path lets it through).
func (f *Files) OpenRemote(raw string) (image.Source, io.Closer, error) {
	p, err := f.resolve(raw)
	if err != nil {
		return image.Source{}, nil, err
	}
	u := f.URL(p)
	src, c, err := f.op.OpenRemote(u)
	if err != nil {
		return image.Source{}, nil, err
	}
	f.mu.Lock()
	if !slices.Contains(f.opened, u) {
		f.opened = append(f.opened, u)
	}
	f.mu.Unlock()
	return src, c, nil
}

// resolve maps a URL to the datastore file it names.
func (f *Files) resolve(raw string) (DatastorePath, error) {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, f.origin.Scheme) || !strings.EqualFold(u.Host, f.origin.Host) || u.User != nil {
		return DatastorePath{}, fmt.Errorf("%s: %w: a disk of %s is read from its datastores on %s only", image.Redact(raw), image.ErrNotAllowed, f.vmURL, f.origin.Host)
	}
	var p DatastorePath
	if rest, ok := strings.CutPrefix(u.Path, "/folder/"); ok {
		p.Path = rest
		p.Datastore = u.Query().Get("dsName")
		if p.Datastore == "" {
			// A name a descriptor records: the datastore of the chain
			// whose folder it is in.
			var hit []string
			for k := range f.dirs {
				ds, dir, _ := strings.Cut(k, "\x00")
				if dir == path.Dir(path.Clean("/" + rest)[1:]) {
					hit = append(hit, ds)
				}
			}
			slices.Sort(hit)
			switch len(hit) {
			case 0:
			case 1:
				p.Datastore = hit[0]
			default:
				return DatastorePath{}, fmt.Errorf("%s: %w: folder %q is on datastores %s alike: cannot tell which one the descriptor means", image.Redact(raw), image.ErrNotAllowed, path.Dir(rest), strings.Join(hit, ", "))
			}
		}
	} else if rest, ok := strings.CutPrefix(u.Path, "/vmfs/volumes/"); ok {
		id, fp, _ := strings.Cut(rest, "/")
		p.Datastore, p.Path = f.byID[id], fp
	}
	p.Path = path.Clean("/" + p.Path)[1:]
	if p.Datastore == "" || p.Path == "" || !f.dirs[p.Datastore+"\x00"+path.Dir(p.Path)] {
		return DatastorePath{}, fmt.Errorf("%s: %w: not in a folder of disk %d's chain as vCenter lists it", image.Redact(raw), image.ErrNotAllowed, f.disk)
	}
	return p, nil
}

// Stats are the requests and bytes of the reads so far.
func (f *Files) Stats() remote.Stats { return f.op.Stats() }

// Opener is the remote opener the files are read through: its counts,
// and its connections to close once the files are (Opener.Close).
func (f *Files) Opener() *remote.Opener { return f.op }

// Identity is the version of the disk that was read: the source's
// vsphere:// URL (with #disk=N), the files' total size, and as ETag a
// digest of every file opened with its size, ETag and Last-Modified;
// LastModified is the latest of theirs.
func (f *Files) Identity() remote.Identity {
	f.mu.Lock()
	urls := slices.Clone(f.opened)
	f.mu.Unlock()
	slices.Sort(urls)
	id := remote.Identity{URL: SourceName(f.vmURL, f.disk)}
	h := sha256.New()
	var latest time.Time
	for _, u := range urls {
		pin, ok := f.op.Pinned(u)
		if !ok {
			continue
		}
		id.Size += pin.Size
		if pin.LastModified.After(latest) {
			latest = pin.LastModified
		}
		fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\n", u, pin.Size, pin.ETag, pin.LastModified.UTC().Format(time.RFC3339Nano))
	}
	id.LastModified = latest
	id.ETag = `"` + hex.EncodeToString(h.Sum(nil))[:32] + `"`
	return id
}

// SourceName names disk n of the VM at vmURL in identities and state.
func SourceName(vmURL string, n int) string { return fmt.Sprintf("%s#disk=%d", vmURL, n) }
