package main

import (
	"context"
	"fmt"
	"io"
)

const version = "0.1.0"

const mainHelp = `convert moves a virtual machine's system disk into the cloud.

It reads a disk image once, checks it against the cloud's import rules
(partitions, file systems, fstab, drivers, agents: see convert check),
and writes it converted to sparse-aware RAW or QCOW2 into a file, to stdout,
or straight into a multipart upload on an S3-compatible store (the cloud's
OSS), in one pass with bounded memory, and with --import on through the
cloud's ImportImage API (--wait follows the import task to its end).

Usage:
  convert SRC [-O raw|qcow2] -o OUT    convert an image (flags below)
  convert info SRC [--json]            describe an image
  convert check SRC [--json]           check an image against the cloud's import rules
  convert batch MANIFEST [--jobs N]    convert many disks (convert batch --help)
  convert batch MANIFEST --queue URL   queue them for workers on many nodes (convert worker --help)
  convert worker --queue URL           convert disks from the queue
  convert uploads ls|abort s3://B/P    list or abort incomplete uploads
  convert import s3://B/K [--wait]     import an uploaded object as an image (convert import --help)
  convert import-status TASK_ID...     state of import tasks; --wait follows them
  convert bench SRC                    measure throughput (convert bench --help)
  convert version                      print the version

SRC is a disk image: QCOW2 (v2/v3, zlib/zstd clusters, backing chains with
--allow-backing), VMDK (sparse, streamOptimized, flat, split, ESXi vmfs,
deltas with --allow-backing), OVA (read in place, manifest digest checked,
--disk N), VHD and VHDX (fixed, dynamic, differencing), VDI, or RAW (file
or block device). The format is detected from
the file's bytes, never from its name. SRC may be a URL too: https://,
http:// or s3://BUCKET/KEY, read in place by parallel ranged reads, never
downloaded first (--source-header, --source-endpoint, ...). OUT is a file,
or - for stdout.

Examples:
  convert disk.qcow2 -O raw -o disk.raw
  convert disk.qcow2 -O raw -o - | ssh host 'cat > disk.raw'
  convert info --json disk.qcow2
  convert https://files.example/exports/web01.vmdk -o web01.raw --source-header @token.txt
  convert s3://exports/web01.ova -O qcow2 -o s3://bucket/web01.qcow2 --source-endpoint https://s3.example
  convert disk.vmdk -O qcow2 -c -o disk.qcow2
  convert disk.vmdk -O qcow2 -o s3://bucket/web01.qcow2 --jdcloud-region cn-north-1 --verify
  convert disk.vmdk -O qcow2 -o s3://bucket/web01.qcow2 --jdcloud-region cn-north-1 --import --wait

`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainHelp+exitCodesHelp)
		return usageError{fmt.Errorf("no image given")}
	}
	switch args[0] {
	case "info":
		return runInfo(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheckCmd(ctx, args[1:], stdout, stderr)
	case "batch":
		if len(args) > 1 && args[1] == "status" {
			return runBatchStatus(ctx, args[2:], stdout, stderr)
		}
		if queueGiven(args[1:]) {
			return runQueueBatch(ctx, args[1:], stdout, stderr)
		}
		return runBatch(ctx, args[1:], stdout, stderr)
	case "worker":
		return runWorker(ctx, args[1:], stdout, stderr)
	case "uploads":
		return runUploads(ctx, args[1:], stdout, stderr)
	case "import":
		return runImport(ctx, args[1:], stdout, stderr)
	case "import-status":
		return runImportStatus(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "convert %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, mainHelp)
		fmt.Fprint(stdout, convertFlags(new(convertOptions)).FlagUsages())
		fmt.Fprint(stdout, "\n"+exitCodesHelp)
		return nil
	}
	return runConvert(ctx, args, stdout, stderr)
}
