package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
)

func newInfoCmd() *cobra.Command {
	var asJSON bool
	var ro readerOptions
	c := &cobra.Command{
		Use:   "info SRC",
		Short: "describe a disk image",
		Long: `Describes a disk image (a file, or a URL: https://, http://, s3://BUCKET/KEY,
read in place): format, subformat, virtual size, file size, allocated
size, cluster size, compression, backing chain, format details (refcount
bits, lazy refcounts, extended L2, dirty and corrupt flags, the disks of an
OVA), and the system disk size to ask the ImportImage API for.`,
		Example: "  convert info disk.vmdk\n  convert info --json disk.qcow2 | jq .virtual_size",
		Args:    exactArgs(1, "info takes one image"),
		RunE: func(c *cobra.Command, args []string) error {
			return runInfo(c.Context(), args[0], &ro, asJSON, c.OutOrStdout(), c.ErrOrStderr())
		},
		Annotations: map[string]string{exitCodesKey: `Exit codes:
  0    the image was read and described
  2    usage error
  3    the image cannot be opened: unreadable, corrupt or unsupported
`},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupInput, func() { ro.register(fs) })
	flagGroup(fs, groupSourceStore, func() { ro.registerStore(fs) })
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&asJSON, "json", false, "print JSON for scripts") })
	return c
}

func runInfo(ctx context.Context, path string, ro *readerOptions, asJSON bool, stdout, stderr io.Writer) error {
	spec, err := ro.spec(path)
	if err != nil {
		return err
	}
	r, err := job.Inspect(ctx, spec, ro.warn(stderr))
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(stdout, r)
	}
	printVSphereInfo(stdout, r.VSphere) // vsphere_cli.go
	printInfo(stdout, &r.Info, "")
	fmt.Fprintf(stdout, "file size:         %s (%d bytes)\n", units.Bytes(r.FileSize), r.FileSize)
	fmt.Fprintf(stdout, "allocated size:    %s\n", units.Bytes(r.AllocatedSize))
	if r.Importable {
		fmt.Fprintf(stdout, "system disk size:  %d GB (--system-disk-size-gb for ImportImage)\n", r.SuggestedDiskSize)
	} else {
		fmt.Fprintf(stdout, "system disk size:  too large: the cloud imports system disks up to %d GiB\n", job.MaxDiskGB)
	}
	return nil
}

func printInfo(w io.Writer, in *job.ImageInfo, indent string) {
	format := in.Format
	if in.Subformat != "" {
		format += " (" + in.Subformat + ")"
	}
	fmt.Fprintf(w, "%simage:             %s\n", indent, in.Path)
	fmt.Fprintf(w, "%sformat:            %s\n", indent, format)
	fmt.Fprintf(w, "%svirtual size:      %s (%d bytes)\n", indent, units.Bytes(in.VirtualSize), in.VirtualSize)
	if in.ClusterSize > 0 {
		fmt.Fprintf(w, "%scluster size:      %d\n", indent, in.ClusterSize)
	}
	if in.Compression != "" {
		fmt.Fprintf(w, "%scompression:       %s\n", indent, in.Compression)
	}
	for _, f := range in.Fields {
		fmt.Fprintf(w, "%s%-19s%s\n", indent, f.Name+":", f.Value)
	}
	if in.BackingFile != "" {
		fmt.Fprintf(w, "%sbacking file:      %s\n", indent, in.BackingFile)
	}
	if in.Backing != nil {
		printInfo(w, in.Backing, indent+"  ")
	}
}

// readerOptions are the flags that say what the source is and bound what
// the readers may open.
type readerOptions struct {
	format       string
	allowBacking bool
	allowPaths   []string
	disk         int
	source       sourceOptions // remote sources (source_cli.go)
	// store is how info and check reach the store of an s3:// source
	// (--endpoint, ... as a conversion takes them); nil in a conversion,
	// whose upload flags say it.
	store *uploadOptions
	fs    *pflag.FlagSet
}

// storeFlags are the flags registerStore adds.
var storeFlags = []string{"endpoint", "region", "jdcloud-region", "path-style", "profile"}

// registerStore adds the store's flags of info and check: --endpoint and
// the rest, for an s3:// source, as a conversion takes them.
func (r *readerOptions) registerStore(fs *pflag.FlagSet) {
	r.store = &uploadOptions{}
	r.store.registerStore(fs)
}

// sourceFormats are the values of -f, for the help and the completion.
var sourceFormats = job.SourceFormats

func (r *readerOptions) register(fs *pflag.FlagSet) {
	fs.StringVarP(&r.format, "source-format", "f", "", "refuse the source unless it is this `format`: "+strings.Join(sourceFormats, ", ")+" (qemu-img's -f; the format is always told by the bytes)")
	fs.BoolVar(&r.allowBacking, "allow-backing", false, "read through backing files and parent disks (QCOW2 backing chains, VMDK, VHD and VHDX deltas)")
	fs.StringArrayVar(&r.allowPaths, "allow-path", nil, "a `folder` that backing files and extents may live in besides the image's own (repeatable)")
	fs.IntVar(&r.disk, "disk", 0, "which disk of a multi-disk container (OVA) or of a vsphere:// VM (as convert vsphere ls lists them, the boot disk first) to read, from 0")
	r.fs = fs
	r.source.register(fs)
}

// warn prints the readers' findings on stderr.
func (r *readerOptions) warn(stderr io.Writer) func(string) {
	return func(msg string) { fmt.Fprintf(stderr, "convert: warning: %s\n", msg) }
}

// spec is the job spec of info and check: the source and how to read it.
func (r *readerOptions) spec(src string) (job.Spec, error) {
	spec := job.Spec{Source: src, SourceFormat: r.format, AllowBacking: r.allowBacking, AllowPaths: r.allowPaths, Disk: r.disk}
	var up job.Store
	if r.store != nil {
		up = r.store.store()
		if !strings.HasPrefix(strings.ToLower(src), "s3://") {
			for _, name := range storeFlags {
				if r.fs.Changed(name) {
					return spec, usageError{fmt.Errorf("--%s applies to s3:// sources", name)}
				}
			}
		}
	}
	if err := r.source.spec(r.fs, &spec, func(fs *pflag.FlagSet, name string) bool { return fs.Changed(name) }, up); err != nil {
		return spec, usageError{err}
	}
	return spec, nil
}
