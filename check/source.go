package check

// NewSourceReport is a report of such findings alone, before the disk's
// bytes are read: the verdict of a source refused on them.
func NewSourceReport(format string, fs []Finding) *Report {
	r := &Report{Format: format, PartitionTable: "none"}
	r.Add(fs...)
	return r
}
