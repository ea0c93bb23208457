package image

// Verifier is implemented by images that can check their source bytes
// against a digest recorded beside them, such as the disk of an OVA checked
// against the OVA's manifest. The check runs alongside the reading pass;
// Verify waits for it and returns its verdict: nil when the digest matched
// or when there was nothing to check, an error wrapping ErrCorrupt on a
// mismatch. Callers call it after the pass and before committing any
// output.
type Verifier interface {
	Verify() error
}

// Digested is implemented by images whose source bytes a recorded digest
// vouches for (the disk of an OVA, by the OVA's manifest): Digest names it
// ("SHA256:hex"), or is "" when the record lists none for the image.
type Digested interface {
	Digest() string
}

// DigestOf is the digest that vouches for im or the image it wraps, and
// whether either can have one at all (an OVA's disk can, a plain file
// cannot).
func DigestOf(im Image) (digest string, ok bool) {
	for range MaxChainDepth {
		if im == nil {
			return "", false
		}
		if d, is := im.(Digested); is {
			return d.Digest(), true
		}
		u, is := im.(interface{ Unwrap() Image })
		if !is {
			return "", false
		}
		im = u.Unwrap()
	}
	return "", false
}

// Verify returns the verdict of im, or of the image it wraps (through an
// Unwrap() Image method), or nil when neither verifies anything.
func Verify(im Image) error {
	for range MaxChainDepth {
		if im == nil {
			return nil
		}
		if v, ok := im.(Verifier); ok {
			return v.Verify()
		}
		u, ok := im.(interface{ Unwrap() Image })
		if !ok {
			return nil
		}
		im = u.Unwrap()
	}
	return nil
}
