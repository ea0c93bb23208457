package main

import "vmimport/internal/units"

// parseSize reads "65536", "64k", "64KiB", "1M", "2MiB", "1G".
func parseSize(s string) (int64, error) { return units.Parse(s) }
