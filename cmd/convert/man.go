package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd writes the man pages of the command tree (make man): one page
// per command, from the same descriptions, flags and examples as --help.
// Hidden: it is a build step, not something users run.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages (section 1) into DIR",
		Hidden: true,
		Args:   exactArgs(1, "gen-man takes the folder to write into"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			// The date of the commit (SOURCE_DATE_EPOCH when the build
			// sets it), so that the pages are the same on every build.
			date := time.Now()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				if n, err := strconv.ParseInt(s, 10, 64); err == nil {
					date = time.Unix(n, 0).UTC()
				}
			} else if t, err := time.Parse(time.RFC3339, readBuildInfo().Committed); err == nil {
				date = t
			}
			root := c.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Title: "CONVERT", Section: "1", Date: &date, Source: "convert " + version, Manual: "convert manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("writing the man pages into %s: %w", args[0], err)
			}
			return nil
		},
	}
}
