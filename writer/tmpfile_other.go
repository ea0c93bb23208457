//go:build !linux

package writer

import "os"

// createAnon: anonymous files are a Linux feature; elsewhere the output is
// written under a named temporary file.
func createAnon(string) (*os.File, error) { return nil, nil }

func linkAnon(*os.File, string) error { return nil }
