package main

import (
	"context"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// subcommands are the commands under convert, in the order the help lists
// them. A new command is a file with its constructor (a *cobra.Command
// whose flags are its own, in flagGroup groups, and whose RunE calls the
// command's body with cmd.Context(), cmd.OutOrStdout() and
// cmd.ErrOrStderr()), and a line here.
var subcommands = []func() *cobra.Command{
	newInfoCmd,
	newCheckCmd,
	newBatchCmd,
	newWorkerCmd,
	newUploadsCmd,
	newVSphereCmd,
	newImportCmd,
	newImportStatusCmd,
	newBenchCmd,
	newVersionCmd,
	newManCmd,
}

const rootLong = `convert moves a virtual machine's system disk into the cloud.

It reads a disk image once, checks it against the cloud's import rules
(partitions, file systems, fstab, drivers, agents: see convert check), and
writes it converted to sparse-aware RAW or QCOW2 into a file, to stdout, or
straight into a multipart upload on an S3-compatible store (the cloud's
OSS), in one pass with bounded memory; with --import on through the cloud's
ImportImage API (--wait follows the import task to its end).

SRC is a disk image: QCOW2 (v2/v3, zlib/zstd clusters, backing chains with
--allow-backing), VMDK (sparse, streamOptimized, flat, split, ESXi vmfs,
deltas with --allow-backing), OVA (read in place, manifest digest checked,
--disk N), VHD and VHDX (fixed, dynamic, differencing), VDI, or RAW (file or
block device). The format is told by the file's bytes, never by its name
(-f asserts it). SRC may be a URL too: https://, http:// or s3://BUCKET/KEY,
read in place by parallel ranged reads, never downloaded first
(--source-header, --source-endpoint, ...), or a VM in vSphere:
vsphere://[USER@]VCENTER/DC/vm/FOLDER/VM, whose disk is read on its
datastore, no export step (--snapshot for a running VM; convert vsphere ls
lists a folder's VMs). OUT is a file, - for stdout, or
s3://BUCKET/KEY; it may follow SRC as a second argument, as with qemu-img
convert.`

const rootExamples = `  convert disk.qcow2 disk.raw
  convert disk.qcow2 -O raw -o - | ssh host 'cat > disk.raw'
  convert disk.vmdk -O qcow2 -c -o disk.qcow2
  convert disk.vmdk -O qcow2 -o s3://bucket/web01.qcow2 --jdcloud-region cn-north-1 --verify
  convert disk.vmdk -O qcow2 -o s3://bucket/web01.qcow2 --jdcloud-region cn-north-1 --import --wait
  convert https://files.example/exports/web01.vmdk -o web01.raw --source-header @token.txt
  convert s3://exports/web01.ova -O qcow2 -o s3://bucket/web01.qcow2 --source-endpoint https://s3.example
  VSPHERE_PASSWORD=... convert vsphere://migrator@vc01/DC1/vm/prod/web01 -o s3://bucket/web01.qcow2 --snapshot
  convert batch disks.jsonl --jobs 3 --memory 2G
  convert info disk.vmdk
  convert check disk.vhdx`

// The help lists the commands in the order of subcommands, not sorted by
// name. cobra keeps this setting in a package variable: it is set once,
// before any tree is built (tests build trees in parallel).
func init() { cobra.EnableCommandSorting = false }

// newRootCmd builds the command tree: convert itself converts one image;
// the subcommands do the rest.
func newRootCmd() *cobra.Command {
	var o convertOptions
	root := &cobra.Command{
		Use:     "convert SRC [OUT] [-O raw|qcow2] [-o OUT|-|s3://BUCKET/KEY] [flags]",
		Short:   "move a virtual machine's system disk into the cloud",
		Long:    rootLong,
		Example: rootExamples,
		Version: versionString(),
		Args:    o.args,
		RunE: func(c *cobra.Command, args []string) error {
			return runConvert(c.Context(), c.Flags(), &o, args[0], c.OutOrStdout(), c.ErrOrStderr())
		},
		// Errors are printed once, by main, in one line; usage is not
		// printed on an error: the message says what to do.
		SilenceErrors: true,
		SilenceUsage:  true,
		Annotations:   map[string]string{exitCodesKey: exitCodesHelp},
		// Completion offers files for SRC and OUT.
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveDefault
		},
	}
	root.SetVersionTemplate("convert {{.Version}}\n")
	root.Flags().SortFlags = false
	o.register(root.Flags())
	setHelp(root)
	for _, newCmd := range subcommands {
		root.AddCommand(newCmd())
	}
	// cobra's completion command, made now to word its help like ours.
	root.InitDefaultCompletionCmd()
	if c := findSub(root, "completion"); c != nil {
		c.Short = "print the shell completion script: bash, zsh, fish or powershell"
	}
	completeFlagValues(root)
	return root
}

// run runs the command line args (without the program's name) and returns
// its error; main prints it in the user's terms and exits with its code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(os.Stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

// completeFlagValues offers the values of the flags that take a fixed set,
// for the shell completion of c and every command under it.
func completeFlagValues(c *cobra.Command) {
	for _, sub := range c.Commands() {
		completeFlagValues(sub)
	}
	for name, values := range map[string][]string{
		"output-format": {"raw", "qcow2"},
		"source-format": sourceFormats,
		"qcow2-compat":  {"1.1", "0.10"},
		"compression":   {"zlib", "zstd"},
		"compress":      {"auto", "always", "never"},
		"check":         {"auto", "strict", "warn", "off"},
		"progress":      {"auto", "always", "never"},
		"os-type":       {"linux", "windows"},
		"architecture":  {"x86_64", "arm64", "i386"},
		"disk-format":   {"raw", "qcow2", "vhd", "vmdk"},
	} {
		if c.Flags().Lookup(name) != nil {
			_ = c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
}
