package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"vmimport/internal/units"
	"vmimport/job"
)

// vsphereOptions are the flags of vsphere:// sources (a VM's disk read on
// its datastore through vCenter).
type vsphereOptions struct {
	snapshot     bool
	insecure     bool
	caFile       string
	passwordFile string
}

// vsphereFlagNames are the names of the flags above.
var vsphereFlagNames = []string{"snapshot", "source-insecure", "source-ca-file", "source-password-file"}

// register adds the flags; withSnapshot is false for the commands that
// read no disk (vsphere ls).
func (v *vsphereOptions) register(fs *pflag.FlagSet, withSnapshot bool) {
	if withSnapshot {
		fs.BoolVar(&v.snapshot, "snapshot", false, "read a running vsphere:// VM as of a snapshot convert takes (quiesced when VMware Tools run) and removes at the end, also on failure or Ctrl-C; without it a running VM is refused")
	}
	fs.BoolVar(&v.insecure, "source-insecure", false, "do not verify the vCenter's TLS certificate (a lab's self-signed one; prefer --source-ca-file)")
	fs.StringVar(&v.caFile, "source-ca-file", "", "PEM `file` of the authorities that signed the vCenter's certificate")
	fs.StringVar(&v.passwordFile, "source-password-file", "", "`file` whose first line is the vCenter account's password (default: $VSPHERE_PASSWORD; the user is the URL's USER@ or $VSPHERE_USER; never a flag's value, never printed or recorded)")
}

// spec fills the vSphere settings of s; given tells the flags set for
// this conversion (a batch's command line gives them to every record,
// where they apply).
func (v *vsphereOptions) spec(fs *pflag.FlagSet, s *job.Spec, given func(*pflag.FlagSet, string) bool) error {
	if !s.IsVSphere() {
		for _, name := range vsphereFlagNames {
			if fs.Lookup(name) != nil && given(fs, name) {
				return fmt.Errorf("--%s applies to vsphere:// sources", name)
			}
		}
		return nil
	}
	s.VSphere = job.VSphereSpec{Snapshot: v.snapshot, Insecure: v.insecure, CAFile: v.caFile}
	if v.passwordFile != "" {
		pw, err := readPasswordFile(v.passwordFile)
		if err != nil {
			return err
		}
		s.VSphere.Password = pw
	}
	return nil
}

// config is the login of the vsphere commands.
func (v *vsphereOptions) config(url string) (job.VSphereLogin, error) {
	c := job.VSphereLogin{URL: url, Insecure: v.insecure, CAFile: v.caFile}
	if v.insecure && v.caFile != "" {
		return c, errors.New("--source-insecure skips the certificate check that --source-ca-file makes: give one")
	}
	if v.passwordFile != "" {
		pw, err := readPasswordFile(v.passwordFile)
		if err != nil {
			return c, err
		}
		c.Password = pw
	}
	return c, nil
}

// readPasswordFile reads the first line of a password file.
func readPasswordFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("--source-password-file: %w", err)
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(io.LimitReader(f, 64<<10), 64<<10).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("--source-password-file %s: %w", name, err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("--source-password-file %s: the first line is empty: write the password on it", name)
	}
	return pw, nil
}

// printVSphereInfo prints what convert info tells of a vsphere:// source
// besides the image: the VM and the disk as the inventory has them.
func printVSphereInfo(w io.Writer, v *job.VSphereInfo) {
	if v == nil {
		return
	}
	fmt.Fprintf(w, "vm:                %s (%s, firmware %s, guest %s)\n", v.VM.URL, v.VM.PowerState, v.VM.Firmware, orDash(v.VM.GuestID))
	fmt.Fprintf(w, "disk:              %d of %d: %s %s on %s, %s\n", v.Disk.Index, len(v.VM.Disks), v.Disk.Label, v.Disk.Bus, v.Disk.File, units.Bytes(v.Disk.Capacity))
	if v.Snapshot != "" {
		fmt.Fprintf(w, "read as of:        snapshot %q (removed)\n", v.Snapshot)
	}
}

func newVSphereCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "vsphere",
		Short: "list a vCenter folder's VMs, write a batch manifest, find snapshots left",
		Long: `Commands for vsphere:// sources: a VM's disks read where they are, on their
datastore, through vCenter (or an ESXi host), with no export step:

  convert vsphere://USER@VCENTER/DC/vm/FOLDER/VM -o s3://BUCKET/KEY [--snapshot]

The password comes from VSPHERE_PASSWORD or --source-password-file, the
user from the URL or VSPHERE_USER. See README.md for the rights the account
needs.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(newVSphereLsCmd(), newVSphereSnapshotsCmd())
	return c
}

func newVSphereLsCmd() *cobra.Command {
	var (
		vo       vsphereOptions
		asJSON   bool
		manifest string
		prefix   string
	)
	c := &cobra.Command{
		Use:   "ls vsphere://[USER@]HOST/DC[/vm/FOLDER]",
		Short: "list the VMs under a vCenter folder: power state, firmware, disks and sizes",
		Long: `Lists the VMs under a folder of a datacenter's VMs (its subfolders too), with
their power state, firmware, guest OS, disks (the boot disk first, as --disk
counts them) and sizes, and the snapshots they have.

--manifest FILE writes a batch manifest (JSON Lines) for them: one record per
VM (templates left out) with its source, an output under --output-prefix, and
"snapshot": true for a running VM; a # line above each says what the
inventory shows. Edit it, then run it: convert batch FILE (or on the queue,
convert batch --queue ...).`,
		Example: "  convert vsphere ls vsphere://migrator@vc01/DC1/vm/prod\n  convert vsphere ls vsphere://vc01/DC1 --manifest fleet.jsonl --output-prefix s3://migr/images/",
		Args:    exactArgs(1, "vsphere ls takes one vsphere:// folder"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVSphereLs(c.Context(), args[0], &vo, asJSON, manifest, prefix, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupInput, func() { vo.register(fs, false) })
	flagGroup(fs, groupBatch, func() {
		fs.StringVar(&manifest, "manifest", "", "write a batch manifest (JSON Lines) for the VMs to this `file` (- for stdout)")
		fs.StringVar(&prefix, "output-prefix", "", "where the manifest's outputs go: a folder (NAME.raw) or s3://BUCKET/PREFIX/ (NAME.qcow2); default: the current folder")
	})
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&asJSON, "json", false, "print the VMs as JSON") })
	return c
}

func runVSphereLs(ctx context.Context, u string, vo *vsphereOptions, asJSON bool, manifest, prefix string, stdout, stderr io.Writer) error {
	cfg, err := vo.config(u)
	if err != nil {
		return usageError{err}
	}
	vms, err := job.VSphereList(ctx, cfg)
	if err != nil {
		return err
	}
	if manifest != "" {
		if err := writeManifest(manifest, prefix, vms, stdout); err != nil {
			return err
		}
		if manifest == "-" {
			return nil
		}
		fmt.Fprintf(stderr, "convert: wrote %s: %d VM(s)\n", manifest, countVMs(vms))
	}
	if asJSON {
		if vms == nil {
			vms = []*job.VSphereVM{}
		}
		return writeJSON(stdout, vms)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tPOWER\tFIRMWARE\tGUEST\tDISKS\tBOOT DISK\tALLOCATED\tSNAPSHOTS")
	for _, vm := range vms {
		boot, alloc := "-", int64(0)
		for _, d := range vm.Disks {
			alloc += d.Allocated
		}
		if len(vm.Disks) > 0 {
			d := vm.Disks[0]
			boot = fmt.Sprintf("%s %s %s", units.Bytes(d.Capacity), d.Bus, d.File)
		}
		name := strings.TrimPrefix(vm.URL, "vsphere://")
		if vm.Template {
			name += " (template)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", plain(name), vm.PowerState, vm.Firmware, orDash(vm.GuestID), len(vm.Disks), plain(boot), units.Bytes(alloc), len(vm.Snapshots))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d VM(s)\n", len(vms))
	return nil
}

func countVMs(vms []*job.VSphereVM) int {
	n := 0
	for _, vm := range vms {
		if !vm.Template && len(vm.Disks) > 0 {
			n++
		}
	}
	return n
}

// writeManifest writes a batch manifest for the VMs.
func writeManifest(name, prefix string, vms []*job.VSphereVM, stdout io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# convert batch manifest for %d VM(s), written by convert vsphere ls; edit, then: convert batch %s\n", countVMs(vms), name)
	names := map[string]int{}
	for _, vm := range vms {
		if vm.Template || len(vm.Disks) == 0 {
			fmt.Fprintf(&b, "# %s: left out (%s)\n", vm.URL, map[bool]string{true: "a template", false: "no disk"}[vm.Template])
			continue
		}
		d := vm.Disks[0]
		fmt.Fprintf(&b, "# %s: %s, firmware %s, guest %s, %d disk(s), boot disk %s %s (%s), %d snapshot(s)\n",
			vm.Name, vm.PowerState, vm.Firmware, orDash(vm.GuestID), len(vm.Disks), d.Label, d.Bus, units.Bytes(d.Capacity), len(vm.Snapshots))
		base := safeName(vm.Name)
		if n := names[base]; n > 0 {
			base = fmt.Sprintf("%s-%d", base, n+1)
		}
		names[safeName(vm.Name)]++
		var out string
		if strings.HasPrefix(prefix, "s3://") {
			out = strings.TrimSuffix(prefix, "/") + "/" + base + ".qcow2"
		} else {
			out = path.Join(prefix, base+".raw")
			if prefix == "" {
				out = base + ".raw"
			}
		}
		rec := []pair{{"source", vm.URL}, {"output", out}}
		if vm.PowerState == "poweredOn" {
			rec = append(rec, pair{"snapshot", true})
		}
		line, err := jsonObject(rec)
		if err != nil {
			return err
		}
		b.WriteString(line + "\n")
	}
	if name == "-" {
		_, err := io.WriteString(stdout, b.String())
		return err
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("--manifest: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--manifest: %w", err)
	}
	return nil
}

type pair struct {
	k string
	v any
}

// jsonObject writes the pairs as one JSON object, in their order.
func jsonObject(pairs []pair) (string, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(p.k)
		v, err := json.Marshal(p.v)
		if err != nil {
			return "", err
		}
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String(), nil
}

// safeName makes a VM's name a file name: no slashes, no leading dot.
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < ' ' {
			return '_'
		}
		return r
	}, s)
	s = strings.TrimLeft(s, ".")
	if s == "" {
		s = "vm"
	}
	return s
}

func newVSphereSnapshotsCmd() *cobra.Command {
	var (
		vo     vsphereOptions
		remove bool
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "snapshots vsphere://[USER@]HOST/DC[/vm/FOLDER[/VM]]",
		Short: "list (and --remove) the snapshots convert left behind",
		Long: `Lists the snapshots named ` + job.VSphereSnapshotPrefix + `... that convert --snapshot took and did not
remove: a run killed hard (SIGKILL, a power cut) before its cleanup. A run
stopped by Ctrl-C or a failure removes its snapshot itself. --remove
removes them (consolidating their deltas into the disks).`,
		Example: "  convert vsphere snapshots vsphere://vc01/DC1/vm/prod\n  convert vsphere snapshots --remove vsphere://vc01/DC1/vm/prod/web01",
		Args:    exactArgs(1, "vsphere snapshots takes one vsphere:// folder or VM"),
		RunE: func(c *cobra.Command, args []string) error {
			return runVSphereSnapshots(c.Context(), args[0], &vo, remove, asJSON, c.OutOrStdout())
		},
	}
	fs := c.Flags()
	fs.SortFlags = false
	flagGroup(fs, groupInput, func() { vo.register(fs, false) })
	fs.BoolVar(&remove, "remove", false, "remove the snapshots found")
	flagGroup(fs, groupDisplay, func() { fs.BoolVar(&asJSON, "json", false, "print them as JSON") })
	return c
}

func runVSphereSnapshots(ctx context.Context, u string, vo *vsphereOptions, remove, asJSON bool, stdout io.Writer) error {
	cfg, err := vo.config(u)
	if err != nil {
		return usageError{err}
	}
	list, err := job.VSphereSnapshots(ctx, cfg, remove)
	if err != nil {
		return err
	}
	failed := 0
	for _, l := range list {
		if l.Error != "" {
			failed++
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].VM != list[j].VM {
			return list[i].VM < list[j].VM
		}
		return list[i].Snapshot.Created.Before(list[j].Snapshot.Created)
	})
	if asJSON {
		if list == nil {
			list = []job.LeftSnapshot{}
		}
		if err := writeJSON(stdout, list); err != nil {
			return err
		}
	} else {
		for _, l := range list {
			state := "left"
			switch {
			case l.Removed:
				state = "removed"
			case l.Error != "":
				state = "NOT removed: " + l.Error
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", plain(l.VM), plain(l.Snapshot.Name), l.Snapshot.Created.Local().Format("2006-01-02 15:04:05"), plain(state))
		}
		fmt.Fprintf(stdout, "%d snapshot(s) left by convert\n", len(list))
	}
	if failed > 0 {
		return fmt.Errorf("%d snapshot(s) could not be removed", failed)
	}
	return nil
}
