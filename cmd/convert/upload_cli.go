package main

import "github.com/spf13/pflag"

// uploadOptions are the flags of uploads to an object store.
type uploadOptions struct{}

func (u *uploadOptions) register(*pflag.FlagSet) {}
