package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"vmimport/check"
	"vmimport/internal/units"
	"vmimport/reader"
	"vmimport/reader/image"
)

type infoReport struct {
	image.Info
	FileSize          int64 `json:"file_size"`
	AllocatedSize     int64 `json:"allocated_size"`
	SuggestedDiskSize int64 `json:"suggested_system_disk_size_gb"`
	Importable        bool  `json:"importable_size"`
}

func runInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	var ro readerOptions
	fs := pflag.NewFlagSet("convert info", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	ro.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: convert info SRC [--json] [--allow-backing] [--allow-path DIR]\n\nDescribes a disk image: format, subformat, virtual size, file size, allocated\nsize, cluster size, compression, backing chain, and the system disk size to\nask the ImportImage API for.\n\nFlags:\n")
		fmt.Fprint(stderr, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{fmt.Errorf("info takes exactly one image, got %d", fs.NArg())}
	}
	path := fs.Arg(0)
	im, err := reader.Open(path, ro.options(stderr))
	if err != nil {
		return inputError{err}
	}
	defer im.Close()
	r := infoReport{Info: im.Info(), SuggestedDiskSize: check.SuggestDiskGB(im.Size())}
	r.Importable = check.VirtualGB(im.Size()) <= check.MaxDiskGB
	if fi, err := os.Stat(path); err == nil {
		r.FileSize = fi.Size()
		r.AllocatedSize = fi.Size()
		if n, ok := allocatedBytes(path, fi); ok && fi.Mode().IsRegular() {
			r.AllocatedSize = n
		}
		if fi.Mode()&os.ModeDevice != 0 {
			r.FileSize, r.AllocatedSize = im.Size(), im.Size()
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printInfo(stdout, &r.Info, "")
	fmt.Fprintf(stdout, "file size:         %s (%d bytes)\n", units.Bytes(r.FileSize), r.FileSize)
	fmt.Fprintf(stdout, "allocated size:    %s\n", units.Bytes(r.AllocatedSize))
	if r.Importable {
		fmt.Fprintf(stdout, "system disk size:  %d GB (--system-disk-size-gb for ImportImage)\n", r.SuggestedDiskSize)
	} else {
		fmt.Fprintf(stdout, "system disk size:  too large: the cloud imports system disks up to %d GiB\n", check.MaxDiskGB)
	}
	return nil
}

func printInfo(w io.Writer, in *image.Info, indent string) {
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

// readerOptions are the flags that bound what the readers may open.
type readerOptions struct {
	allowBacking bool
	allowPaths   []string
	disk         int
}

func (r *readerOptions) register(fs *pflag.FlagSet) {
	fs.BoolVar(&r.allowBacking, "allow-backing", false, "read through backing files and parent disks (QCOW2 backing chains, VMDK, VHD and VHDX deltas)")
	fs.StringArrayVar(&r.allowPaths, "allow-path", nil, "a folder that backing files and extents may live in besides the image's own (repeatable)")
	fs.IntVar(&r.disk, "disk", 0, "which disk of a multi-disk container (OVA) to read, from 0")
}

func (r *readerOptions) options(stderr io.Writer) reader.Options {
	return reader.Options{
		AllowBacking: r.allowBacking,
		AllowPaths:   r.allowPaths,
		Disk:         r.disk,
		Warn:         func(msg string) { fmt.Fprintf(stderr, "convert: warning: %s\n", msg) },
	}
}
