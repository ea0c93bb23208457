package batch

import (
	"time"

	"vmimport/job"
	"vmimport/upload"
)

// withheld stands for a presigned link left out of shared state.
const withheld = ""

// WithoutLinks is a copy of the outcome without its presigned download
// links (the upload's, the import request's and command's, all signed for
// days): what a queue's shared state keeps unless its workers are told to
// share them, since anyone who can read the queue could fetch the disk.
// convert import signs a fresh link when one is needed.
func (oc *Outcome) WithoutLinks() *Outcome {
	if oc == nil {
		return nil
	}
	c := *oc
	c.Target = reportWithoutLinks(oc.Target)
	c.Import = importWithoutLinks(oc.Import)
	return &c
}

func reportWithoutLinks(r *upload.Report) *upload.Report {
	if r == nil {
		return nil
	}
	c := *r
	c.PresignedURL, c.PresignExpires = withheld, time.Time{}
	c.ImportImage.ImageURL, c.ImportCommand = withheld, withheld
	return &c
}

func importWithoutLinks(r *job.ImportResult) *job.ImportResult {
	if r == nil {
		return nil
	}
	c := *r
	c.Request.ImageURL = withheld
	return &c
}

// resultWithoutLinks is a copy of a job's result without its presigned
// links, for the bookkeeping.
func resultWithoutLinks(r *job.Result) *job.Result {
	if r == nil {
		return nil
	}
	c := *r
	c.Upload = reportWithoutLinks(r.Upload)
	c.Import = importWithoutLinks(r.Import)
	return &c
}
