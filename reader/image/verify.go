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
