package check

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Severity says how much a finding matters for the import.
type Severity int

// Severities, from the least to the most serious.
const (
	// Info: something worth knowing, or a rule that cannot be checked
	// without booting the guest.
	Info Severity = iota
	// Warning: the import may work, but the instance may not boot, get an
	// address, or be reachable.
	Warning
	// Error: a rule the cloud states as a requirement, broken as the bytes
	// prove; the import fails or the instance does not boot.
	Error
)

func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	case Error:
		return "error"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText writes the severity's name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity's name.
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "info":
		*s = Info
	case "warning":
		*s = Warning
	case "error":
		*s = Error
	default:
		return fmt.Errorf("unknown severity %q", b)
	}
	return nil
}

// Finding is one rule's verdict on the image.
type Finding struct {
	Rule     string   `json:"rule"`
	Severity Severity `json:"severity"`
	// Message says what is wrong and how to fix it.
	Message string `json:"message"`
	// Evidence: where the bytes that prove it are. Offset is a byte
	// offset on the virtual disk; Partition counts from 1 (5 and up are
	// logical partitions); Path is a file inside the partition's file
	// system.
	Offset    *int64 `json:"offset,omitempty"`
	Partition int    `json:"partition,omitempty"`
	Path      string `json:"path,omitempty"`
	// Key and Value are the registry evidence of a Windows rule: the key
	// (HKLM\SYSTEM\ControlSet001\Services\viostor) and what its value
	// says (Start=3).
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

// Partition is one entry of the partition table, with what its first bytes
// hold.
type Partition struct {
	Index   int    `json:"index"`
	Start   int64  `json:"start"`
	Size    int64  `json:"size"`
	Type    string `json:"type"` // MBR type byte as "0x83", or GPT type GUID
	Active  bool   `json:"active,omitempty"`
	Logical bool   `json:"logical,omitempty"`
	FS      string `json:"fs,omitempty"` // ext4, xfs, ntfs, vfat, swap, lvm2, luks, btrfs, md, ...
	UUID    string `json:"uuid,omitempty"`
	Label   string `json:"label,omitempty"`
	// UsedPct and InodesPct are the file system's use in percent, when
	// the superblock tells (-1 when not known).
	UsedPct   float64 `json:"used_pct,omitempty"`
	InodesPct float64 `json:"inodes_pct,omitempty"`
	// Mount is where the guest mounts it, when known ("/" for the root).
	Mount string `json:"mount,omitempty"`
}

// OS is what the check learnt of the guest system, in the ImportImage
// body's terms.
type OS struct {
	// OSType is "linux" or "windows" (the body's osType), empty when no
	// system was found.
	OSType string `json:"os_type,omitempty"`
	// Platform is the body's platform: "CentOS", "Ubuntu", "Other Linux",
	// "Windows Server" or "Other Windows".
	Platform string `json:"platform,omitempty"`
	// Name and Version come from /etc/os-release (NAME, VERSION_ID), or
	// for Windows from the registry (ProductName; "2008 R2", "2012 R2",
	// "2016").
	Name    string `json:"name,omitempty"`
	ID      string `json:"id,omitempty"`
	Version string `json:"version,omitempty"`
	// Architecture is the body's architecture: "x86_64", "i386" or
	// "arm64", from the ELF header of /bin/sh (Windows: the PE header of
	// System32\cmd.exe); empty when not known.
	Architecture string `json:"architecture,omitempty"`
	// RootPartition is the partition holding the root file system.
	RootPartition int `json:"root_partition,omitempty"`
}

// Report is the whole verdict.
type Report struct {
	Format           string      `json:"format,omitempty"`
	VirtualSize      int64       `json:"virtual_size"`
	SystemDiskSizeGB int64       `json:"system_disk_size_gb"`
	PartitionTable   string      `json:"partition_table"` // "mbr", "gpt", "none"
	Partitions       []Partition `json:"partitions,omitempty"`
	OS               OS          `json:"os"`
	Findings         []Finding   `json:"findings"`
	// Status is "pass", "warnings" or "errors".
	Status string `json:"status"`
}

func (r *Report) addf(rule string, sev Severity, format string, args ...any) *Finding {
	r.Findings = append(r.Findings, Finding{Rule: rule, Severity: sev, Message: fmt.Sprintf(format, args...)})
	return &r.Findings[len(r.Findings)-1]
}

func at(off int64) *int64 { return &off }

// Add adds findings made outside the check's own rules (the digest of an
// OVA's disk, checked by reading it; what a hypervisor's inventory says of
// the VM: vsphere.* rules), keeping the order and settling the status.
func (r *Report) Add(fs ...Finding) {
	r.Findings = append(r.Findings, fs...)
	r.finish()
}

// Count is the number of findings of severity s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// Rules are the distinct rule ids of the findings at or above severity
// least, sorted.
func (r *Report) Rules(least Severity) []string {
	var ids []string
	for _, f := range r.Findings {
		if f.Severity >= least && !slices.Contains(ids, f.Rule) {
			ids = append(ids, f.Rule)
		}
	}
	slices.Sort(ids)
	return ids
}

// Has reports whether a finding of the rule is present.
func (r *Report) Has(rule string) bool {
	return slices.ContainsFunc(r.Findings, func(f Finding) bool { return f.Rule == rule })
}

func (r *Report) finish() {
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	switch {
	case r.Count(Error) > 0:
		r.Status = "errors"
	case r.Count(Warning) > 0:
		r.Status = "warnings"
	default:
		r.Status = "pass"
	}
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false) // evidence quotes files: keep <, > and & as they are
	return e.Encode(r)
}

// WriteText writes the findings for people, one a line, most serious
// first. Findings below severity least are left out.
func (r *Report) WriteText(w io.Writer, least Severity) {
	for _, f := range r.Findings {
		if f.Severity < least {
			continue
		}
		line := fmt.Sprintf("%-7s %s: %s", f.Severity, f.Rule, f.Message)
		var ev []string
		if f.Partition > 0 {
			ev = append(ev, fmt.Sprintf("partition %d", f.Partition))
		}
		if f.Path != "" {
			ev = append(ev, f.Path)
		}
		if f.Key != "" {
			ev = append(ev, f.Key)
		}
		if f.Value != "" {
			ev = append(ev, f.Value)
		}
		if f.Offset != nil {
			ev = append(ev, fmt.Sprintf("offset %d", *f.Offset))
		}
		if len(ev) > 0 {
			line += " [" + strings.Join(ev, ", ") + "]"
		}
		io.WriteString(w, line+"\n")
	}
}

// Summary is one line: the counts and the OS found.
func (r *Report) Summary() string {
	s := fmt.Sprintf("%s: %d error(s), %d warning(s), %d info", r.Status, r.Count(Error), r.Count(Warning), r.Count(Info))
	if r.OS.OSType != "" {
		name := strings.TrimSpace(r.OS.Name + " " + r.OS.Version)
		if r.OS.Version != "" && strings.Contains(r.OS.Name, r.OS.Version) {
			name = r.OS.Name // "Windows Server 2016 Standard", not "... 2016"
		}
		s += fmt.Sprintf("; %s %s (platform %q", r.OS.OSType, name, r.OS.Platform)
		if r.OS.Architecture != "" {
			s += ", " + r.OS.Architecture
		}
		s += ")"
	}
	return s
}

// ImportFields are the ImportImage request fields the check can fill.
type ImportFields struct {
	Architecture string `json:"architecture"`
	OSType       string `json:"osType"`
	Platform     string `json:"platform"`
	OSVersion    string `json:"osVersion,omitempty"`
}

// ImportFields fills the ImportImage fields from what the check found,
// with the defaults the API needs where it found nothing: x86_64, linux,
// "Other Linux" (or "Other Windows").
func (r *Report) ImportFields() ImportFields {
	f := ImportFields{Architecture: r.OS.Architecture, OSType: r.OS.OSType, Platform: r.OS.Platform, OSVersion: r.OS.Version}
	if f.Architecture == "" {
		f.Architecture = "x86_64"
	}
	if f.OSType == "" {
		f.OSType = "linux"
	}
	if f.Platform == "" {
		f.Platform = map[string]string{"linux": "Other Linux", "windows": "Other Windows"}[f.OSType]
	}
	return f
}
