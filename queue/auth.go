package queue

import (
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
)

// authOptions are the connection's credentials and TLS settings, from the
// environment (never from a command line, where ps shows them):
//
//   - NATS_CREDS: a credentials file (a JWT and an nkey seed, as nsc makes)
//   - NATS_NKEY: an nkey seed file
//   - NATS_USER and NATS_PASSWORD: a user and password (a password in the
//     URL, nats://user:pass@host, works too, but shows in ps)
//   - NATS_CA: the CA certificates that sign the server's (TLS is used with
//     a tls:// URL, or when the server asks for it; the system's CAs by
//     default)
//   - NATS_CERT and NATS_KEY: a client certificate and its key (mutual TLS)
func authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if creds := os.Getenv("NATS_CREDS"); creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if seed := os.Getenv("NATS_NKEY"); seed != "" {
		o, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY %s: %w", seed, err)
		}
		opts = append(opts, o)
	}
	user, pass := os.Getenv("NATS_USER"), os.Getenv("NATS_PASSWORD")
	if (user == "") != (pass == "") {
		return nil, fmt.Errorf("give both NATS_USER and NATS_PASSWORD, or neither")
	}
	if user != "" {
		opts = append(opts, nats.UserInfo(user, pass))
	}
	if ca := os.Getenv("NATS_CA"); ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	cert, key := os.Getenv("NATS_CERT"), os.Getenv("NATS_KEY")
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("give both NATS_CERT and NATS_KEY, or neither")
	}
	if cert != "" {
		opts = append(opts, nats.ClientCert(cert, key))
	}
	return opts, nil
}
