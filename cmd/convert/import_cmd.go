package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/jdcloud"
	"vmimport/job"
)

const importLong = `Imports an object uploaded earlier by convert into the cloud as a private
image (ImportImage), from what the upload stored in the object's metadata:
disk format, system disk size, osType, platform, osVersion, architecture
and image name. Flags override them; an object convert did not upload
needs --disk-format and --system-disk-size-gb. The image link is a fresh
presigned link signed for the intranet host (--presign-ttl).

The clientToken comes from the bucket, key and ETag: importing the same
object again gives the first import's image and task back. After a failed
task, give --client-token to import anew.

Region: --jdcloud-region, else the region of a jdcloud-oss --endpoint, else
--region. Credentials of the cloud's API: JDCLOUD_ACCESS_KEY_ID and
JDCLOUD_SECRET_ACCESS_KEY, else the jdc CLI's current profile
(~/.jdc/config), else the AWS chain the upload uses; never printed.`

const importStatusLong = `Shows the state of image import tasks (DescribeImageTasks): status, progress,
image id, the cloud's errorInfo. --wait follows them until every one has
ended: exit 0 when all finished, 5 when one failed, 8 at --wait-timeout.
Region and credentials as for convert import.`

// importCmd holds the flags of convert import.
type importCmd struct {
	u           uploadOptions
	i           importOptions
	asJSON      bool
	progress    string
	diskFormat  string
	diskSizeGB  int64
	forceImport bool
	clientToken string
}

func newImportCmd() *cobra.Command {
	var o importCmd
	c := &cobra.Command{
		Use:     "import s3://BUCKET/KEY",
		Short:   "import an object uploaded earlier as a private image",
		Long:    importLong,
		Example: "  convert import s3://my-bucket/images/web01.qcow2 --jdcloud-region cn-north-1 --wait\n  convert import s3://my-bucket/other.raw --disk-format raw --system-disk-size-gb 40 --jdcloud-region cn-north-1",
		Args:    exactArgs(1, "give one object, s3://BUCKET/KEY"),
		RunE: func(c *cobra.Command, args []string) error {
			return runImport(c.Context(), c.Flags(), &o, args[0], c.OutOrStdout(), c.ErrOrStderr())
		},
		Annotations: map[string]string{exitCodesKey: exitCodesHelp},
	}
	fs := c.Flags()
	fs.SortFlags = false
	u, i := &o.u, &o.i
	flagGroup(fs, groupImport, func() { i.register(fs, false) })
	flagGroup(fs, groupUpload, func() {
		u.registerStore(fs)
		fs.DurationVar(&u.presignTTL, "presign-ttl", 7*24*time.Hour, "validity of the presigned image link (24h..168h)")
	})
	flagGroup(fs, groupImage, func() {
		fs.StringVar(&u.imageName, "image-name", "", "image name (default: the one the upload stored, else from the key)")
		fs.StringVar(&u.description, "description", "", "image description")
		fs.StringVar(&u.osType, "os-type", "", "osType: linux or windows (default: what the upload's check found)")
		fs.StringVar(&u.platform, "platform", "", `platform: CentOS, Ubuntu, "Windows Server", "Other Linux", "Other Windows", ...`)
		fs.StringVar(&u.osVersion, "os-version", "", "osVersion, e.g. 7.9 or 22.04")
		fs.StringVar(&u.architecture, "architecture", "", "architecture: x86_64, arm64 or i386")
		fs.StringVar(&o.diskFormat, "disk-format", "", "diskFormat of the object: raw, qcow2, vhd or vmdk")
		fs.Int64Var(&o.diskSizeGB, "system-disk-size-gb", 0, "system disk size: 40..500, a multiple of 10, not below the virtual size")
		fs.BoolVar(&o.forceImport, "force-import", false, "ask the cloud to skip its own image checks (forceImport)")
		fs.StringVar(&o.clientToken, "client-token", "", "clientToken (at most 64 characters; default: from bucket, key and ETag)")
	})
	flagGroup(fs, groupDisplay, func() {
		registerProgress(fs, &o.progress, "with --wait: progress bar on stderr")
		fs.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	})
	return c
}

// runImport is `convert import s3://BUCKET/KEY`: the flags as an
// ObjectImport, the result printed.
func runImport(ctx context.Context, fs *pflag.FlagSet, o *importCmd, object string, stdout, stderr io.Writer) error {
	u, i := &o.u, &o.i
	if err := i.validate(o.progress); err != nil {
		return err
	}
	oi := job.ObjectImport{
		Object: object, Store: u.store(), Import: i.spec(), PresignTTL: u.presignTTL, ClientToken: o.clientToken,
		FieldsGiven: fs.Changed("disk-format") && fs.Changed("system-disk-size-gb"),
		Override: func(m *job.ImportMeta) {
			for _, f := range []struct {
				flag string
				dst  *string
				val  string
			}{
				{"image-name", &m.ImageName, u.imageName}, {"description", &m.Description, u.description},
				{"os-type", &m.OSType, u.osType}, {"platform", &m.Platform, u.platform}, {"os-version", &m.OSVersion, u.osVersion},
				{"architecture", &m.Architecture, u.architecture}, {"disk-format", &m.DiskFormat, o.diskFormat},
			} {
				if fs.Changed(f.flag) {
					*f.dst = f.val
				}
			}
			if fs.Changed("system-disk-size-gb") {
				m.SystemDiskSizeGB = o.diskSizeGB
			}
			if fs.Changed("force-import") {
				m.ForceImport = o.forceImport
			}
		},
	}
	b := newBars(o.progress, stderr)
	tasks := newTaskBars(b)
	res, err := job.ImportObject(ctx, oi, job.ImportHooks{
		Task:    func(t jdcloud.Task) { tasks.update(t, "") },
		Notice:  func(s string) { b.printf("convert: %s\n", s) },
		Warning: func(s string) { b.printf("convert: warning: %s\n", s) },
	})
	tasks.finish()
	b.wait()
	if o.asJSON && res != nil {
		writeJSON(stdout, res)
	} else {
		printImport(stdout, res)
	}
	var ie *job.ImportError
	if errors.As(err, &ie) {
		return importError{ie.Err}
	}
	return err
}

func newImportStatusCmd() *cobra.Command {
	var (
		u        uploadOptions
		i        importOptions
		asJSON   bool
		progress string
	)
	c := &cobra.Command{
		Use:     "import-status TASK_ID...",
		Short:   "show import tasks, or follow them to their end (--wait)",
		Long:    importStatusLong,
		Example: "  convert import-status 1234 --jdcloud-region cn-north-1 --wait",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("give one or more task ids (convert import-status --help)")}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return runImportStatus(c.Context(), &u, &i, progress, asJSON, args, c.OutOrStdout(), c.ErrOrStderr())
		},
		Annotations: map[string]string{exitCodesKey: exitCodesHelp},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupImport, func() { i.register(fs, false) })
	flagGroup(fs, groupUpload, func() { u.registerStore(fs) })
	flagGroup(fs, groupDisplay, func() {
		registerProgress(fs, &progress, "with --wait: progress bar on stderr (one task)")
		fs.BoolVar(&asJSON, "json", false, "print the tasks as JSON")
	})
	return c
}

// runImportStatus is `convert import-status TASK_ID...`.
func runImportStatus(ctx context.Context, u *uploadOptions, i *importOptions, progress string, asJSON bool, args []string, stdout, stderr io.Writer) error {
	ids := make([]jdcloud.TaskID, len(args))
	for n, a := range args {
		if strings.TrimSpace(a) == "" {
			return usageError{errors.New("an empty task id")}
		}
		ids[n] = jdcloud.TaskID(a)
	}
	if err := i.validate(progress); err != nil {
		return err
	}
	api, err := job.ConnectStoreAPI(ctx, nil, u.store(), i.spec(), func(s string) { fmt.Fprintf(stderr, "convert: %s\n", s) })
	if err != nil {
		return err
	}
	region := api.Region()
	var tasks []jdcloud.Task
	if i.wait {
		// A task the region does not know fails at once, as without
		// --wait: the wait's grace is for a task just submitted.
		got, err := api.Tasks(ctx, "ImportImage", ids...)
		if err == nil {
			var missing []string
			for _, id := range ids {
				if _, ok := got[id]; !ok {
					missing = append(missing, string(id))
				}
			}
			if len(missing) > 0 {
				return importError{fmt.Errorf("%w: no import task %s in region %s", jdcloud.ErrInvalidRequest, strings.Join(missing, ", "), region)}
			}
		}
	}
	if i.wait {
		b := newBars(progress, stderr)
		tb := newTaskBars(b)
		tasks, err = api.WaitTasks(ctx, ids, jdcloud.WaitOptions{
			Timeout: i.waitTimeout, MinInterval: i.pollInterval, MaxInterval: max(60*time.Second, i.pollInterval),
			Progress: func(t jdcloud.Task) { tb.update(t, "") },
			Log:      func(s string) { b.printf("convert: %s\n", s) },
		})
		tb.finish()
		b.wait()
	} else {
		var got map[jdcloud.TaskID]jdcloud.Task
		got, err = api.Tasks(ctx, "ImportImage", ids...)
		var missing []string
		for _, id := range ids {
			if t, ok := got[id]; ok {
				tasks = append(tasks, t)
			} else {
				missing = append(missing, string(id))
			}
		}
		if err == nil && len(missing) > 0 {
			err = fmt.Errorf("%w: no import task %s in region %s", jdcloud.ErrInvalidRequest, strings.Join(missing, ", "), region)
		}
	}
	if asJSON {
		if tasks == nil {
			tasks = []jdcloud.Task{}
		}
		writeJSON(stdout, tasks)
	} else {
		printTasks(stdout, tasks)
	}
	if err != nil {
		if errors.Is(err, jdcloud.ErrUnauthorized) {
			err = fmt.Errorf("%w; the credentials were %s", err, api.Creds)
		}
		return importError{err}
	}
	return nil
}

// printTasks writes a table of tasks.
func printTasks(w io.Writer, tasks []jdcloud.Task) {
	if len(tasks) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tSTATUS\tPROGRESS\tIMAGE\tCREATED\tFINISHED\tERROR")
	for _, t := range tasks {
		info := t.ErrorInfo
		if info == "" && t.TaskStatus == jdcloud.TaskFailed {
			info = t.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%d%%\t%s\t%s\t%s\t%s\n", t.TaskID, orDash(t.TaskStatus), t.Progress, orDash(t.ImageID),
			orDash(t.CreatedTime), orDash(t.FinishedTime), oneLine(info))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
