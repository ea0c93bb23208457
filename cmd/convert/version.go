package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is the release; make release sets it (and buildDate) with
// -ldflags "-X main.version=... -X main.buildDate=...". A `go install
// MODULE@vX.Y.Z` build takes the module's version from the build info.
var (
	version   = "0.1.0"
	buildDate = ""
)

// buildInfo is what the binary knows of its build: the version, the
// commit it was built from (its date, and whether the tree had changes),
// and the Go toolchain.
type buildInfo struct {
	Version   string
	Revision  string
	Committed string
	Modified  bool
	Built     string
	Go        string
	Platform  string
}

// pseudoVersion matches Go's pseudo-versions (v0.0.0-20261202142829-38fd8e354b5e).
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}(\+dirty)?$`)

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Built: buildDate, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	// A release tag of the module (go install MODULE@v1.2.3), not the
	// pseudo-version a build in a checkout is stamped with.
	if v := bi.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) && buildDate == "" {
		b.Version = strings.TrimPrefix(v, "v")
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Committed = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// versionString is the one line of convert --version.
func versionString() string {
	b := readBuildInfo()
	s := b.Version
	if b.Revision != "" {
		rev := b.Revision[:min(12, len(b.Revision))]
		if b.Modified {
			rev += "+changes"
		}
		s += " (" + rev + ")"
	}
	return s + " " + b.Go + " " + b.Platform
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, the source revision and the build date",
		Long: `Prints the version, the commit the binary was built from (and whether the
tree had uncommitted changes), the commit's date, the build date of a
release build, and the Go toolchain and platform.`,
		Args: exactArgs(0, "version takes no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			printVersion(c.OutOrStdout(), readBuildInfo())
			return nil
		},
	}
}

func printVersion(w io.Writer, b buildInfo) {
	fmt.Fprintf(w, "convert %s\n", b.Version)
	if b.Revision != "" {
		mod := ""
		if b.Modified {
			mod = " (with uncommitted changes)"
		}
		fmt.Fprintf(w, "revision:   %s%s\n", b.Revision, mod)
	}
	if b.Committed != "" {
		fmt.Fprintf(w, "committed:  %s\n", b.Committed)
	}
	if b.Built != "" {
		fmt.Fprintf(w, "built:      %s\n", b.Built)
	}
	fmt.Fprintf(w, "go:         %s %s\n", b.Go, b.Platform)
}
