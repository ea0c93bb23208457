package jdcloud

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Credentials are an AccessKey pair of the cloud.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// Source says where they came from ("JDCLOUD_ACCESS_KEY_ID", "~/.jdc/config
	// profile default", ...), for messages. Never the secret.
	Source string
}

// String never shows the secret: the key id is cut short too.
func (c Credentials) String() string {
	id := c.AccessKeyID
	if len(id) > 8 {
		id = id[:4] + "..." + id[len(id)-4:]
	}
	if c.Source == "" {
		return "access key " + id
	}
	return "access key " + id + " from " + c.Source
}

// GoString keeps %#v from printing the secret.
func (c Credentials) GoString() string { return "jdcloud.Credentials{" + c.String() + "}" }

// A CredentialsProvider gives the credentials to sign with. Retrieve is
// called for every request, so a provider may refresh them.
type CredentialsProvider interface {
	Retrieve(ctx context.Context) (Credentials, error)
}

// CredentialsFunc adapts a function to CredentialsProvider.
type CredentialsFunc func(ctx context.Context) (Credentials, error)

// Retrieve calls f.
func (f CredentialsFunc) Retrieve(ctx context.Context) (Credentials, error) { return f(ctx) }

// StaticCredentials always gives the same pair.
func StaticCredentials(accessKeyID, secretAccessKey, source string) CredentialsProvider {
	c := Credentials{AccessKeyID: accessKeyID, SecretAccessKey: secretAccessKey, Source: source}
	return CredentialsFunc(func(context.Context) (Credentials, error) { return c, nil })
}

// Environment variables of a separate pair for the OpenAPI.
const (
	EnvAccessKeyID     = "JDCLOUD_ACCESS_KEY_ID"
	EnvSecretAccessKey = "JDCLOUD_SECRET_ACCESS_KEY"
)

// EnvCredentials reads JDCLOUD_ACCESS_KEY_ID and JDCLOUD_SECRET_ACCESS_KEY
// through getenv (os.Getenv when nil). With neither set it returns
// ErrNoCredentials, so a chain goes on; with one of the two, an error.
func EnvCredentials(getenv func(string) string) CredentialsProvider {
	if getenv == nil {
		getenv = os.Getenv
	}
	return CredentialsFunc(func(context.Context) (Credentials, error) {
		id, secret := getenv(EnvAccessKeyID), getenv(EnvSecretAccessKey)
		switch {
		case id == "" && secret == "":
			return Credentials{}, ErrNoCredentials
		case id == "" || secret == "":
			return Credentials{}, fmt.Errorf("%w: set both %s and %s, or neither", ErrNoCredentials, EnvAccessKeyID, EnvSecretAccessKey)
		}
		return Credentials{AccessKeyID: id, SecretAccessKey: secret, Source: "$" + EnvAccessKeyID}, nil
	})
}

// JDCConfigCredentials reads the pair of the jdc CLI's current profile:
// the INI file DIR/config (a section per profile with access_key and
// secret_key, as `jdc configure add` writes it) and the profile named in
// DIR/current ("default" when that file is missing). dir is usually
// ~/.jdc. Without the config file or the profile it returns
// ErrNoCredentials, so a chain goes on.
func JDCConfigCredentials(dir string) CredentialsProvider {
	return CredentialsFunc(func(context.Context) (Credentials, error) {
		if dir == "" {
			return Credentials{}, ErrNoCredentials
		}
		data, err := os.ReadFile(filepath.Join(dir, "config"))
		if errors.Is(err, os.ErrNotExist) {
			return Credentials{}, ErrNoCredentials
		}
		if err != nil {
			return Credentials{}, fmt.Errorf("reading the jdc CLI's configuration: %w", err)
		}
		profile := "default"
		if b, err := os.ReadFile(filepath.Join(dir, "current")); err == nil && strings.TrimSpace(string(b)) != "" {
			profile = strings.TrimSpace(string(b))
		}
		ini := parseINI(data)
		sec, ok := ini[profile]
		if !ok {
			return Credentials{}, ErrNoCredentials
		}
		get := func(k string) string {
			if v, ok := sec[k]; ok {
				return v
			}
			return ini["DEFAULT"][k]
		}
		id, secret := get("access_key"), get("secret_key")
		src := filepath.Join(dir, "config") + " profile " + profile
		if id == "" || secret == "" {
			return Credentials{}, fmt.Errorf("%w: %s has no access_key and secret_key", ErrNoCredentials, src)
		}
		return Credentials{AccessKeyID: id, SecretAccessKey: secret, Source: src}, nil
	})
}

// parseINI reads the subset of Python's configparser format that `jdc
// configure` writes: [section] headers, "key = value" or "key: value"
// lines (keys lower-cased, both sides trimmed), # and ; comment lines.
func parseINI(data []byte) map[string]map[string]string {
	out := map[string]map[string]string{}
	var cur map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			name := strings.TrimSpace(line[1 : len(line)-1])
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			cur = out[name]
			continue
		}
		if cur == nil {
			continue
		}
		i := strings.IndexAny(line, "=:")
		if i < 0 {
			continue
		}
		cur[strings.ToLower(strings.TrimSpace(line[:i]))] = strings.TrimSpace(line[i+1:])
	}
	return out
}

// ChainCredentials asks each provider in turn and gives the first pair
// found; a provider that returns ErrNoCredentials (and nothing more
// specific) passes the turn.
func ChainCredentials(providers ...CredentialsProvider) CredentialsProvider {
	return CredentialsFunc(func(ctx context.Context) (Credentials, error) {
		for _, p := range providers {
			c, err := p.Retrieve(ctx)
			if err == nil {
				return c, nil
			}
			if err != ErrNoCredentials { // a wrapped ErrNoCredentials says more: stop
				return Credentials{}, err
			}
		}
		return Credentials{}, ErrNoCredentials
	})
}
