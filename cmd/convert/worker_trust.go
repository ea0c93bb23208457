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
}

const limitsHelp = `What a message may make the worker do is bounded by the worker's own
limits, never by the message: a message is input from the network (anyone
who may publish on the queue's subjects can send one). The worker checks it
as convert batch checks a manifest's records (absolute paths, no state
file, no credentials or headers in it), then reads a local source only
inside an --allow-source folder (its links followed), a remote one only
under an --allow-source URL prefix; writes a file only inside an
--allow-output folder, uploads only under an --allow-output
s3://BUCKET/PREFIX; and reaches only the endpoints of its own environment
(or of --jdcloud-region) and those of --allow-endpoint. Without them it
allows nothing. A message outside them fails at once, for good, and its
status says why. The environment's CONVERT_ALLOW_SOURCE,
CONVERT_ALLOW_OUTPUT and CONVERT_ALLOW_ENDPOINT (comma-separated) add to
the flags. Keep the queue itself closed: NATS authentication (NATS_CREDS,
NATS_NKEY, NATS_USER and NATS_PASSWORD) and TLS (tls://, NATS_CA,
NATS_CERT and NATS_KEY); see the README.`

func (l *limitFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&l.sources, "allow-source", nil, "the sources of messages may be read from this `DIR|URL`: a folder, or a URL prefix (https://HOST/PATH/, s3://BUCKET/PREFIX) (repeatable; also CONVERT_ALLOW_SOURCE)")
	fs.StringArrayVar(&l.outputs, "allow-output", nil, "the outputs of messages may be written to this `DIR|S3URL`: a folder, or s3://BUCKET/PREFIX (repeatable; also CONVERT_ALLOW_OUTPUT)")
	fs.StringArrayVar(&l.endpoints, "allow-endpoint", nil, "messages may name this store or API endpoint `URL` (--endpoint, --source-endpoint, --jdcloud-api-endpoint) (repeatable; also CONVERT_ALLOW_ENDPOINT)")
}

// limits are the flags' limits with the environment's.
func (l *limitFlags) limits() queue.Limits {
	return queue.Limits{
		Sources:   append(envList("CONVERT_ALLOW_SOURCE"), l.sources...),
		Outputs:   append(envList("CONVERT_ALLOW_OUTPUT"), l.outputs...),
		Endpoints: append(envList("CONVERT_ALLOW_ENDPOINT"), l.endpoints...),
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
