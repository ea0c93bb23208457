package main

import (
	"os"
	"strings"

	"github.com/spf13/pflag"

	"vmimport/queue"
)

// limitFlags are a worker's limits on what a message may make it do: the
// flags, and the environment's CONVERT_ALLOW_SOURCE, CONVERT_ALLOW_OUTPUT
// and CONVERT_ALLOW_ENDPOINT (comma-separated) beside them.
type limitFlags struct {
	sources, outputs, endpoints []string
	caFiles                     []string
	insecure                    bool
}

const limitsHelp = `What a message may make the worker do is bounded by the worker's own
limits, never by the message: a message is input from the network (anyone
who may publish on the queue's subjects can send one). The worker checks it
as convert batch checks a manifest's records (absolute paths, no state
file, no credentials or headers in it), then reads a local source only
inside an --allow-source folder (its links followed), a remote one only
under an --allow-source URL prefix, a vsphere:// VM only on a vCenter it
allows (--allow-source vsphere://HOST/[DC/vm/FOLDER/], or --allow-endpoint
https://HOST: its VSPHERE_PASSWORD goes there and nowhere else), trusting
its certificate only as --allow-ca-file and --allow-insecure let a message
ask; writes a file only inside an
--allow-output folder, uploads only under an --allow-output
s3://BUCKET/PREFIX; and reaches only the endpoints of its own environment
(or of --jdcloud-region) and those of --allow-endpoint. Without them it
allows nothing. A message outside them fails at once, for good, and its
status says why. The environment's CONVERT_ALLOW_SOURCE,
CONVERT_ALLOW_OUTPUT, CONVERT_ALLOW_ENDPOINT and CONVERT_ALLOW_CA_FILE
(comma-separated) add to the flags, as CONVERT_ALLOW_INSECURE=1 does to
--allow-insecure. Keep the queue itself closed: NATS authentication (NATS_CREDS,
NATS_NKEY, NATS_USER and NATS_PASSWORD) and TLS (tls://, NATS_CA,
NATS_CERT and NATS_KEY); see the README.`

func (l *limitFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&l.sources, "allow-source", nil, "the sources of messages may be read from this `DIR|URL`: a folder, or a URL prefix (https://HOST/PATH/, s3://BUCKET/PREFIX), a vCenter or its folder (vsphere://HOST/, vsphere://HOST/DC/vm/FOLDER/) (repeatable; also CONVERT_ALLOW_SOURCE)")
	fs.StringArrayVar(&l.outputs, "allow-output", nil, "the outputs of messages may be written to this `DIR|S3URL`: a folder, or s3://BUCKET/PREFIX (repeatable; also CONVERT_ALLOW_OUTPUT)")
	fs.StringArrayVar(&l.endpoints, "allow-endpoint", nil, "messages may name this store or API endpoint `URL` (--endpoint, --source-endpoint, --jdcloud-api-endpoint; a vCenter's https://HOST for its vsphere:// VMs) (repeatable; also CONVERT_ALLOW_ENDPOINT)")
	fs.StringArrayVar(&l.caFiles, "allow-ca-file", nil, "messages may name this PEM `file` as a vsphere:// source's --source-ca-file (repeatable; also CONVERT_ALLOW_CA_FILE)")
	fs.BoolVar(&l.insecure, "allow-insecure", false, "messages may ask to skip the check of a vCenter's certificate (--source-insecure; a lab's; also CONVERT_ALLOW_INSECURE=1)")
}

// limits are the flags' limits with the environment's.
func (l *limitFlags) limits() queue.Limits {
	return queue.Limits{
		Sources:   append(envList("CONVERT_ALLOW_SOURCE"), l.sources...),
		Outputs:   append(envList("CONVERT_ALLOW_OUTPUT"), l.outputs...),
		Endpoints: append(envList("CONVERT_ALLOW_ENDPOINT"), l.endpoints...),
		CAFiles:   append(envList("CONVERT_ALLOW_CA_FILE"), l.caFiles...),
		Insecure:  l.insecure || os.Getenv("CONVERT_ALLOW_INSECURE") == "1",
	}
}

func envList(name string) []string {
	var out []string
	for _, v := range strings.Split(os.Getenv(name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
