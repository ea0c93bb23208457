// Command demobucket creates a bucket on the local S3 server that `make
// demo` starts, so the demo can upload the sample image. It reads the
// endpoint and credentials from CONVERT_TEST_S3_ENDPOINT and the usual
// AWS_* variables, as .ci/versitygw.sh prints them.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demobucket NAME")
		os.Exit(2)
	}
	endpoint := os.Getenv("CONVERT_TEST_S3_ENDPOINT")
	if endpoint == "" {
		fmt.Fprintln(os.Stderr, "demobucket: CONVERT_TEST_S3_ENDPOINT is not set (eval \"$(.ci/versitygw.sh)\" first)")
		os.Exit(2)
	}
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "demobucket:", err)
		os.Exit(1)
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(os.Args[1])})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		fmt.Fprintln(os.Stderr, "demobucket:", err)
		os.Exit(1)
	}
}
