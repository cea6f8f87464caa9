package builder

import (
	"context"
	"fmt"
)

// ec2API is every EC2 call the build makes; it only wires the steps
// together, each of which takes its own narrow interface.
type ec2API interface {
	sourceImageAPI
	networkAPI
	keyPairAPI
	securityGroupAPI
	instanceAPI
	stopInstanceAPI
	imageAPI
	copyImageAPI
	imageAttributeAPI
	deleteImageAPI
}

// regionalEC2 returns the EC2 client of a region.
type regionalEC2 func(ctx context.Context, region string) (ec2API, error)

// clientFor returns a client for a region; every one honours the custom
// endpoint of the access block.
type clientFor[T any] func(ctx context.Context, region string) (T, error)

// clientAs narrows the regional client constructor to one step's interface.
func clientAs[T any](f regionalEC2) clientFor[T] {
	return func(ctx context.Context, region string) (T, error) {
		var zero T
		c, err := f(ctx, region)
		if err != nil {
			return zero, err
		}
		t, ok := c.(T)
		if !ok {
			return zero, fmt.Errorf("ec2 client does not implement %T", zero)
		}
		return t, nil
	}
}

// ssmAPI is every SSM call the build makes.
type ssmAPI interface {
	parameterAPI
	sessionAPI
}
