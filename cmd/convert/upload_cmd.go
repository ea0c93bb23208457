package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"vmimport/job"
)

const uploadsLong = `Lists (ls) or aborts (abort) the incomplete multipart uploads under a
prefix, and the zero objects (KEY.convert-zeros-*) convert left behind: a
run killed after completing its upload but before its cleanup leaves one
(--resume of that run removes it too). The target cloud's OSS has no
lifecycle rule that cleans them, and they cost storage until removed.`

func newUploadsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "uploads ls|abort s3://BUCKET[/PREFIX]",
		Short: "list or abort incomplete uploads and leftover zero objects",
		Long:  uploadsLong,
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("give ls or abort, then s3://BUCKET[/PREFIX] (convert uploads --help)")}
			}
			return usageError{fmt.Errorf("unknown command %q for convert uploads: %s", args[0], suggest(c, args[0], "use ls or abort"))}
		},
	}
	c.AddCommand(newUploadsLsCmd(), newUploadsAbortCmd())
	return c
}

func newUploadsLsCmd() *cobra.Command {
	var u uploadOptions
	var asJSON bool
	c := &cobra.Command{
		Use:     "ls s3://BUCKET[/PREFIX]",
		Short:   "list incomplete uploads and leftover zero objects",
		Long:    uploadsLong,
		Example: "  convert uploads ls s3://my-bucket/images/ --jdcloud-region cn-north-1",
		Args:    exactArgs(1, "uploads ls takes one s3://BUCKET[/PREFIX]"),
		RunE: func(c *cobra.Command, args []string) error {
			return runUploads(c.Context(), &u, uploadsRun{where: args[0], asJSON: asJSON}, c.InOrStdin(), c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupUpload, func() { u.registerStore(fs) })
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&asJSON, "json", false, "print JSON for scripts") })
	return c
}

func newUploadsAbortCmd() *cobra.Command {
	var u uploadOptions
	var r uploadsRun
	c := &cobra.Command{
		Use:   "abort s3://BUCKET[/PREFIX]",
		Short: "abort incomplete uploads and delete leftover zero objects",
		Long: uploadsLong + `

abort lists what it would abort and asks before it does (it refuses when
stdin is not a terminal to ask on): --yes aborts without asking, --dry-run
only lists. --upload-id limits it to one upload and its zero object.`,
		Example: "  convert uploads abort s3://my-bucket/images/ --dry-run\n  convert uploads abort s3://my-bucket/images/web01.qcow2 --upload-id 2~abc --yes",
		Args:    exactArgs(1, "uploads abort takes one s3://BUCKET[/PREFIX]"),
		RunE: func(c *cobra.Command, args []string) error {
			r.where, r.abort = args[0], true
			if r.yes && r.dryRun {
				return usageError{errors.New("--yes aborts and --dry-run only lists: give one")}
			}
			return runUploads(c.Context(), &u, r, c.InOrStdin(), c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupUpload, func() {
		u.registerStore(fs)
		fs.StringVar(&r.uploadID, "upload-id", "", "abort only this upload (and its zero object)")
		fs.BoolVarP(&r.yes, "yes", "y", false, "abort without asking")
		fs.BoolVar(&r.dryRun, "dry-run", false, "only list what would be aborted and deleted")
	})
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&r.asJSON, "json", false, "print JSON for scripts") })
	return c
}

// uploadsRun is one convert uploads ls or abort.
type uploadsRun struct {
	where    string
	abort    bool
	uploadID string
	yes      bool
	dryRun   bool
	asJSON   bool
}

// runUploads lists, or aborts, what is pending under r.where.
func runUploads(ctx context.Context, u *uploadOptions, r uploadsRun, stdin io.Reader, stdout, stderr io.Writer) error {
	ups, err := job.OpenUploads(ctx, u.store(), r.where)
	if err != nil {
		return err
	}
	defer ups.Close()
	bucket, prefix := ups.Bucket, ups.Prefix
	pending, err := ups.List(ctx, r.uploadID)
	if err != nil {
		return err
	}
	if !r.abort || r.dryRun || !r.yes {
		if r.asJSON {
			if pending == nil {
				pending = []job.Pending{}
			}
			if err := writeJSON(stdout, pending); err != nil {
				return err
			}
		} else {
			listPending(stdout, bucket, pending)
		}
		if len(pending) == 0 {
			fmt.Fprintf(stderr, "no incomplete uploads or zero objects under s3://%s/%s\n", bucket, prefix)
			return nil
		}
		if !r.abort || r.dryRun {
			return nil
		}
		if err := confirm(stdin, stderr, pendingSummary(pending)); err != nil {
			return err
		}
	}
	for _, p := range pending {
		state, err := ups.Drop(ctx, p)
		if err != nil {
			return err
		}
		switch {
		case r.asJSON:
		case p.Kind == job.KindZeroObject:
			fmt.Fprintf(stdout, "deleted zero object  s3://%s/%s\n", bucket, p.Key)
		case state != "":
			fmt.Fprintf(stdout, "aborted %s  s3://%s/%s (and removed its resume state %s)\n", p.UploadID, bucket, p.Key, state)
		default:
			fmt.Fprintf(stdout, "aborted %s  s3://%s/%s\n", p.UploadID, bucket, p.Key)
		}
	}
	if r.asJSON && r.yes {
		if pending == nil {
			pending = []job.Pending{}
		}
		return writeJSON(stdout, pending)
	}
	return nil
}

// listPending prints what is pending, a line each.
func listPending(w io.Writer, bucket string, pending []job.Pending) {
	for _, p := range pending {
		what := p.UploadID
		if p.Kind == job.KindZeroObject {
			what = fmt.Sprintf("zero object (%d bytes)", p.Size)
		}
		fmt.Fprintf(w, "%s  %s  s3://%s/%s\n", p.Initiated.UTC().Format(time.RFC3339), what, bucket, p.Key)
	}
}

// pendingSummary counts what an abort would drop.
func pendingSummary(pending []job.Pending) string {
	var ups, zeros int
	for _, p := range pending {
		if p.Kind == job.KindZeroObject {
			zeros++
		} else {
			ups++
		}
	}
	return fmt.Sprintf("abort %d upload(s) and delete %d zero object(s)", ups, zeros)
}

// confirm asks on the terminal before what; without a terminal to ask on
// it refuses, so that a script never drops uploads it did not say --yes to.
func confirm(stdin io.Reader, stderr io.Writer, what string) error {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return usageError{fmt.Errorf("not asking without a terminal: give --yes to %s, or --dry-run to list only", what)}
	}
	fmt.Fprintf(stderr, "%s? [y/N] ", upperFirst(what))
	answer, _ := bufio.NewReader(f).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("nothing aborted: the answer was not yes")
}
