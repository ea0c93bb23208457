package job

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"vmimport/upload"
)

// Client connects to the store a spec names, with room for conns
// connections, for one use: close it after. (The jobs of a process share
// theirs through Clients.) Credentials come from the standard AWS chain of
// the caller's environment.
func (st Store) Client(ctx context.Context, conns int) (*upload.Client, error) {
	c := st.config()
	c.Conns = conns
	return upload.NewClient(ctx, c)
}

// config is the client configuration of the store.
func (st Store) config() upload.Config {
	return upload.Config{Endpoint: st.Endpoint, Region: st.Region, JDCloudRegion: st.JDCloudRegion, PathStyle: st.PathStyle, Profile: st.Profile}
}

// Clients are the store clients of a process, shared by its jobs: one per
// store, with one pacer each (upload.Clients). NewClients makes them;
// Close them when done.
type Clients = upload.Clients

// NewClients returns the clients of a process.
func NewClients() *Clients { return upload.NewClients(upload.Config{}) }

// HeadObject tells the size and ETag of an object of the store st names,
// s3://BUCKET/KEY, through clients (nil: a client of its own).
func HeadObject(ctx context.Context, clients *Clients, st Store, object string) (size int64, etag string, err error) {
	bucket, key, err := upload.ParseS3URL(object)
	if err != nil {
		return 0, "", err
	}
	var c *upload.Client
	if clients != nil {
		c, err = clients.Get(ctx, st.config())
	} else if c, err = st.Client(ctx, 1); err == nil {
		defer c.Close()
	}
	if err != nil {
		return 0, "", err
	}
	o, err := c.Bucket(bucket).Head(ctx, key)
	return o.Size, o.ETag, err
}

// Destination is the bucket and key of an s3:// output; a key that is
// empty or ends in / is completed with the source's base name and the
// output format's extension.
func (s *Spec) Destination() (bucket, key string, err error) {
	bucket, key, err = upload.ParseS3URL(s.Output)
	if err != nil {
		return "", "", err
	}
	if key == "" || strings.HasSuffix(key, "/") {
		base := s.sourceBase()
		format := s.OutputFormat()
		key += strings.TrimSuffix(base, filepath.Ext(base)) + "." + format
	}
	return bucket, key, nil
}

// outputShape describes what shapes the output bytes: a resumed upload
// must make the same.
func (j *run) outputShape(plan plan) string {
	if j.s.Format == "qcow2" {
		// As earlier versions wrote it, so that their uploads resume.
		q := plan.qcow2
		shape := fmt.Sprintf("qcow2 {Compat:%s ClusterSize:%d Compression:%s VirtualSize:%d}", q.Compat, q.ClusterSize, q.Compression, q.VirtualSize)
		if j.s.QCOW2.Compress == CompressAuto && q.Compression != "" {
			shape += fmt.Sprintf(" compress=auto blocks=%d", j.s.BlockSize)
		}
		return shape
	}
	return j.s.Format
}

// uploadStart is an upload whose bucket (and import API) passed the
// preflight checks.
type uploadStart struct {
	c           *upload.Client
	bucket, key string
	api         *API // nil without an import
}

// connect connects to the store, checks the credentials and that the
// bucket takes an upload (a probe upload, aborted), and with an import
// connects to the cloud's API and checks it takes the credentials.
func (j *run) connect(ctx context.Context) (*uploadStart, error) {
	s, u := &j.s, &j.s.Upload
	bucket, key, err := s.Destination()
	if err != nil {
		return nil, &SpecError{err}
	}
	j.res.Output = "s3://" + bucket + "/" + key
	c, err := j.clients.Get(ctx, u.Store.config())
	if err != nil {
		return nil, err
	}
	up := &uploadStart{c: c, bucket: bucket, key: key}
	if err := c.Preflight(ctx, bucket, key); err != nil {
		return nil, err
	}
	if s.Import.Enabled {
		if up.api, err = ConnectAPI(ctx, u.Store, c, s.Import, j.notice, true); err != nil {
			return nil, err
		}
	}
	return up, nil
}

// startUpload creates the multipart upload (or adopts the one to resume),
// with what the import needs stored as the object's metadata.
func (j *run) startUpload(ctx context.Context) (*upload.Target, error) {
	s, u, up, plan := &j.s, &j.s.Upload, j.up, j.plan
	var id upload.SourceID
	var err error
	if j.res.SourceID != nil {
		// The source as it was opened: the version the pass reads.
		id = *j.res.SourceID
	} else if j.res.Remote != nil {
		id = sourceID(j.res.Remote.Source)
	} else if id, err = upload.IdentifySource(s.Source); err != nil {
		return nil, &InputError{fmt.Errorf("%s: %w", s.Source, err)}
	}
	meta := upload.ImportMeta{
		Architecture: u.Image.Architecture, OSType: u.Image.OSType, Platform: u.Image.Platform, OSVersion: u.Image.OSVersion,
		DiskFormat: s.Format, SystemDiskSizeGB: j.diskGB, ImageName: u.Image.Name, Description: u.Image.Description,
	}
	j.fillImport(&meta, j.rep, j.forceImport)
	stored := meta
	if (j.rep == nil || j.rep.OS.OSType == "") && u.Image.Platform == "" {
		stored.Platform = "" // not known: `convert import` warns, as an import here does
	}
	if stored.ImageName == "" {
		stored.ImageName = upload.DefaultImageName(up.key)
	}
	var state upload.StateStore
	if j.env.State != nil {
		state = upload.KVState{Store: j.env.State, Key: upload.StateKey(up.c, up.bucket, up.key), Where: j.env.StateWhere}
	}
	return upload.Start(ctx, up.c, upload.Options{
		State:  state,
		Bucket: up.bucket, Key: up.key, SizeHint: plan.outputMax, PartSize: plan.partSize, PartSizeChosen: u.PartSize != 0, Concurrency: plan.concurrency,
		StateFile: u.StateFile, Resume: u.Resume, ResumeImplied: u.ResumeImplied, Keep: u.Keep, Source: id, Output: j.outputShape(plan), Verify: u.Verify,
		PresignTTL: u.PresignTTL, Import: meta, Metadata: stored.ObjectMetadata(j.im.Size()), Preflighted: true,
		Log: j.notice, Steps: j.uploadStep, Fence: j.env.Fence, Buffers: j.buffers,
		Parts: func(p upload.PartStored) { j.emit(Event{Kind: PartStored, Part: &p}) },
	})
}

// uploadStep reports a step of the upload's commit as a phase, and its
// bytes as PhaseProgress, at most ten times a second. The workers call it
// too: a progress event of a step that has ended carries its own phase.
func (j *run) uploadStep(p upload.StepProgress) {
	j.stepMu.Lock()
	changed := p.Step != j.step
	j.step = p.Step
	now := time.Now()
	due := changed || p.Done >= p.Total || now.Sub(j.lastStep) >= 100*time.Millisecond
	if due {
		j.lastStep = now
	}
	j.stepMu.Unlock()
	if changed {
		j.phase(Phase(p.Step))
	}
	if due && p.Total > 0 {
		j.emit(Event{Kind: PhaseProgress, Phase: Phase(p.Step), Done: p.Done, Total: p.Total})
	}
}
