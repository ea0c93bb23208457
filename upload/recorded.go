package upload

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// AbortRecorded aborts the upload that store records (one a failed, killed
// or handed-back run kept for a resume), deletes the zero object beside it
// and forgets the state, so that nothing of it is left in the bucket. A
// queue worker calls it for a disk that failed for good, or whose upload
// cannot be resumed. It returns the id of the upload it aborted; none
// recorded is not an error ("", nil).
func AbortRecorded(ctx context.Context, c *Client, store StateStore) (string, error) {
	st, err := loadState(ctx, store)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if st.Endpoint != endpointName(c) {
		return "", fmt.Errorf("%s records an upload at %s, not %s", store.Name(), st.Endpoint, endpointName(c))
	}
	// Written back first: a store fenced by a lease the caller lost
	// refuses it, and nothing is aborted.
	if err := st.save(ctx, store); err != nil {
		return "", err
	}
	s := c.Bucket(st.Bucket)
	if err := s.AbortUpload(ctx, st.Key, st.UploadID); err != nil && apiCode(err) != "NoSuchUpload" && httpStatus(err) != 404 {
		return "", fmt.Errorf("aborting upload %s of s3://%s/%s: %s", st.UploadID, st.Bucket, st.Key, short(err))
	}
	for _, key := range []string{st.ZeroKey, st.ZeroKey + ".seed"} {
		if key == ".seed" {
			continue
		}
		if err := s.Delete(ctx, key); err != nil && httpStatus(err) != 404 {
			return st.UploadID, fmt.Errorf("deleting the zero object s3://%s/%s: %s", st.Bucket, key, short(err))
		}
	}
	return st.UploadID, store.Remove(ctx)
}
