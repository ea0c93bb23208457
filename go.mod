module vmimport

go 1.26.0

require (
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/lima-vm/go-qcow2reader v0.7.1 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
