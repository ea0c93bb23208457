package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"vmimport/check"
	"vmimport/internal/units"
	"vmimport/job"
)

// Exit codes of convert check.
const (
	exitCheckErrors   = exitBadInput // 3: error-severity findings
	exitCheckWarnings = 4            // warnings, no errors
)

const checkLong = `Checks a disk image against the cloud's import rules, offline, from the
disk's bytes: image format and size, partition table and boot (MBR with
boot code and one active partition; no GPT, no EFI system partition), file
systems (ext3/ext4/xfs or NTFS; no LVM, LUKS, btrfs, md RAID; at most 98%
used), and inside a Linux root file system: /etc/fstab, 70-persistent-net
udev rules, cloud-init and qemu-guest-agent, virtio drivers, SELinux, sshd,
DHCP, the cloud's agent, 64-bit, and the OS name and version for the
ImportImage request. convert runs the same check before writing (--check).

Every finding has a rule id, a severity (error: the import fails or the
instance does not boot; warning: it may not work well; info: worth
knowing, or not checkable offline), a message saying how to fix it, and its
evidence (partition, file, disk offset).`

const checkExitCodes = `Exit codes:
  0    pass: no errors, no warnings
  1    the check itself failed (I/O error)
  2    usage error
  3    errors found (the import would fail), or the image cannot be opened
  4    warnings only
  130  interrupted
`

// checkFailed carries the exit code of a check with findings.
type checkFailed struct {
	code int
	msg  string
}

func (c checkFailed) Error() string { return c.msg }

// ExitCode is the process exit code.
func (c checkFailed) ExitCode() int { return c.code }

func newCheckCmd() *cobra.Command {
	var (
		asJSON     bool
		diskSizeGB int64
		shrink     bool
		ro         readerOptions
	)
	c := &cobra.Command{
		Use:     "check SRC",
		Short:   "check an image against the cloud's import rules",
		Long:    checkLong,
		Example: "  convert check disk.vhdx\n  convert check --json --system-disk-size-gb 40 --shrink disk.qcow2",
		Args:    exactArgs(1, "check takes one image"),
		RunE: func(c *cobra.Command, args []string) error {
			if shrink && diskSizeGB == 0 {
				return usageError{fmt.Errorf("--shrink needs --system-disk-size-gb")}
			}
			return runCheckCmd(c.Context(), args[0], &ro, diskSizeGB, shrink, asJSON, c.OutOrStdout(), c.ErrOrStderr())
		},
		Annotations: map[string]string{exitCodesKey: checkExitCodes},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupInput, func() { ro.register(fs) })
	flagGroup(fs, groupCheck, func() {
		fs.Int64Var(&diskSizeGB, "system-disk-size-gb", 0, "the system disk size the import will ask for, in `GB` (default: the smallest that fits)")
		fs.BoolVar(&shrink, "shrink", false, "check for convert --shrink: the virtual size may exceed --system-disk-size-gb if everything beyond is zero")
	})
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&asJSON, "json", false, "print the report as JSON on stdout, for scripts") })
	return c
}

func runCheckCmd(ctx context.Context, src string, ro *readerOptions, diskSizeGB int64, shrink, asJSON bool, stdout, stderr io.Writer) error {
	im, _, err := ro.open(ctx, src, stderr)
	if err != nil {
		return err
	}
	defer im.Close()
	if err := job.CheckSourceFormat(ro.format, im.Info()); err != nil {
		return inputError{err}
	}
	r, err := check.Run(ctx, im, check.Options{Format: im.Info().Format, DiskSizeGB: diskSizeGB, Shrink: shrink})
	if err != nil {
		return err
	}
	if vi, ok := im.(*job.VSphereImage); ok {
		vi.AddFindings(r) // what vCenter's inventory says
	}
	if asJSON {
		if err := r.WriteJSON(stdout); err != nil {
			return err
		}
	} else {
		table := map[string]string{"mbr": "MBR", "gpt": "GPT", "none": "no"}[r.PartitionTable]
		fmt.Fprintf(stdout, "%s: %s, %s virtual, %s partition table\n", src, r.Format, units.Bytes(r.VirtualSize), table)
		r.WriteText(stdout, check.Info)
		fmt.Fprintln(stdout, r.Summary())
	}
	switch {
	case r.Count(check.Error) > 0:
		return checkFailed{exitCheckErrors, fmt.Sprintf("%s: %d import rule(s) broken", src, r.Count(check.Error))}
	case r.Count(check.Warning) > 0:
		return checkFailed{exitCheckWarnings, fmt.Sprintf("%s: %d warning(s)", src, r.Count(check.Warning))}
	}
	return nil
}
