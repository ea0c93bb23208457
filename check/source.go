package check

// Add puts findings that come from outside the disk's bytes (what a
// hypervisor's inventory says of the VM: vsphere.* rules) into the report,
// most serious first, and settles its status again.
func (r *Report) Add(fs ...Finding) {
	r.Findings = append(r.Findings, fs...)
	r.finish()
}

// NewSourceReport is a report of such findings alone, before the disk's
// bytes are read: the verdict of a source refused on them.
func NewSourceReport(format string, fs []Finding) *Report {
	r := &Report{Format: format, PartitionTable: "none"}
	r.Add(fs...)
	return r
}
