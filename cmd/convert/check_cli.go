package main

import (
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// checkOptions are the flags of the import readiness check of a
// conversion.
type checkOptions struct {
	mode   string // auto, strict, warn, off
	shrink bool
}

func (c *checkOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&c.mode, "check", "auto", "import readiness check before writing: strict (stop on errors), warn (print and go on), off; auto is strict for buckets, warn for files and stdout")
	fs.BoolVar(&c.shrink, "shrink", false, "allow a virtual size above --system-disk-size-gb when every byte beyond it is zero and every partition ends inside it; the output then has the requested size")
}

// prefixWriter puts a prefix before every line.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+l); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
