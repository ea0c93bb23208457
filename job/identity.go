package job

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"vmimport/internal/ident"
	"vmimport/upload"
)

// identityEndpoint is the base URL a client of the store reaches, as far
// as the spec and the environment tell it: Endpoint, else the target
// cloud's endpoint of JDCloudRegion, else the SDK's environment variables;
// "" for the SDK's default (AWS).
func (st Store) identityEndpoint() string {
	switch {
	case st.Endpoint != "":
		return st.Endpoint
	case st.JDCloudRegion != "":
		return upload.JDCloudEndpoint(st.JDCloudRegion)
	}
	for _, v := range []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		if e := os.Getenv(v); e != "" {
			return e
		}
	}
	return ""
}

// OutputIdentity is the identity of the output: a file by the real path
// of its folder and its name, an object by its store's normalised
// endpoint, its bucket and key; "" for stdout.
func (s *Spec) OutputIdentity() (ident.ID, error) {
	switch s.Kind() {
	case ToStdout:
		return "", nil
	case ToBucket:
		b, k, err := s.Destination()
		if err != nil {
			return "", err
		}
		return ident.Object(s.Upload.Store.identityEndpoint(), b, k), nil
	}
	return ident.File(s.Output)
}

// SourceIdentities are the identities of what the source reads: a local
// path's own (its folder resolved) and its target's (every link
// followed); an s3:// object's; the objects an http(s) URL may be of
// (path-style or virtual-hosted, at the URL's origin).
func (s *Spec) SourceIdentities() []ident.ID {
	switch {
	case !s.IsRemote():
		var ids []ident.ID
		if id, err := ident.File(s.Source); err == nil {
			ids = append(ids, id)
		}
		if id, err := ident.Target(s.Source); err == nil && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
		return ids
	case s.IsVSphere():
		return nil // a VM's disk on a datastore, never an object of a store
	case strings.HasPrefix(strings.ToLower(s.Source), "s3://"):
		b, k, err := upload.ParseS3URL(s.Source)
		if err != nil {
			return nil
		}
		return []ident.ID{ident.Object(s.Remote.store(s).identityEndpoint(), b, k)}
	}
	return ident.URLObjects(s.Source)
}

// refuseSourceAsOutput refuses an upload into the object the source is,
// however the endpoints are spelt (a trailing slash, localhost for
// 127.0.0.1, a presigned URL of the object): `s3://b/vm.ova --disk 0 -o
// s3://b/vm.ova` would replace the OVA by one of its disks. A local output
// that is the source is refused when the source is open, by its inode
// (refuseSameFile).
func (s *Spec) refuseSourceAsOutput() error {
	if s.Kind() != ToBucket || !s.IsRemote() {
		return nil
	}
	out, err := s.OutputIdentity()
	if err != nil {
		return nil // Destination's error is Upload.validate's to report
	}
	if slices.Contains(s.SourceIdentities(), out) {
		return fmt.Errorf("-o %s: the output is the source object (the same bucket and key on the same store, however its endpoint is spelt): give another key", s.Output)
	}
	return nil
}
